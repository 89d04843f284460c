"""U-Net pix2pix trained on the cleaned (face, cartoon) pairs."""
