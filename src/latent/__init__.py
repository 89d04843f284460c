"""Latent-space tools for StyleGAN generators of both families: projection of photos into the
generator (``src.latent.project``), style and expression mixing of projected latents
(``src.latent.mix``) and face swap by projection with an identity loss (``src.latent.swap``)."""
