"""Serving trained generators: the ``cartoonize`` command and the Telegram bot."""
