"""User-facing errors: the CLI prints these as one line and exits with code 2."""


class KenningError(Exception):
    """A problem with the user's input or files, described in one line."""


def first_line(exc: BaseException) -> str:
    """The line of a library's exception that names the problem (FAISS puts it last)."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
