"""StyleGAN3 networks, ops and training (filled in by the StyleGAN3 issues)."""
