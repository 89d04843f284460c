"""U-GAT-IT and the photo2cartoon (Soft-AdaLIN + hourglass) unpaired translators."""
