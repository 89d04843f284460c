"""``python -m src.toonify``: the ``toonify`` stage by its name (``src.serve.cartoonize``)."""
