"""User-facing errors and warnings: each is one line on stderr; errors exit with code 2."""

from __future__ import annotations

import sys


class KenningError(Exception):
    """A problem with the user's input or files, described in one line."""


def first_line(exc: BaseException) -> str:
    """The line of a library's exception that names the problem (FAISS puts it last)."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def one_line(text: str) -> str:
    """`text` on one line: control characters (a newline in a file name or label) shown escaped."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode() for ch in text)


def warn(message: str) -> None:
    """One warning line on stderr, written around any progress bar."""
    from tqdm import tqdm

    tqdm.write(f"warning: {one_line(message)}", file=sys.stderr)
