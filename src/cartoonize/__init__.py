"""``python -m src.cartoonize``: the ``cartoonize`` stage by its name (``src.serve.cartoonize``)."""
