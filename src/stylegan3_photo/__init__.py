"""``python -m src.stylegan3_photo``: the StyleGAN3 module as the ``stylegan3_photo`` stage."""
