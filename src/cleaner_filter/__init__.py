"""``python -m src.cleaner_filter``: the ``cleaner_filter`` stage (``src.cleaner.filter``)."""
