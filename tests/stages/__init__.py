"""Tiny stages for testing the chain runner: deterministic, fast, with injectable failures."""
