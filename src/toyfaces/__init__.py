"""``python -m src.toyfaces``: the ``toyfaces`` stage (code in ``src.common.toyfaces``)."""
