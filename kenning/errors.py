"""User-facing errors: the CLI prints these as one line and exits with code 2."""


class KenningError(Exception):
    """A problem with the user's input or files, described in one line."""
