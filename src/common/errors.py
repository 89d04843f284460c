"""User-facing errors: one line that names the file or key and the fix, never a traceback."""


class UserError(Exception):
    """A mistake in the user's input (config, path, file); printed as one line and exit code 2."""
