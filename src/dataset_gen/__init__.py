"""Paired (face, cartoon) dataset generation from shared StyleGAN3 noise."""
