"""Layer-wise blending of a real-face and a cartoon StyleGAN3 generator."""
