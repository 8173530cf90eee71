"""User-facing errors and warnings: each is one line on stderr; errors exit with code 2."""

from __future__ import annotations

import re
import sys


class KenningError(Exception):
    """A problem with the user's input or files, described in one line."""


_SOURCE_LOCATION = re.compile(r"Error in .*? at \S+:\d+: ")  # FAISS: "Error in <C++ signature> at <file>:<line>: "


def first_line(exc: BaseException) -> str:
    """The line of a library's exception that names the problem (FAISS puts it last), without the
    C++ signature and source path FAISS puts before it."""
    text = str(exc).strip().splitlines()
    return without_source_location(text[-1]) if text else type(exc).__name__


def without_source_location(text: str) -> str:
    return _SOURCE_LOCATION.sub("", text)


def one_line(text: str) -> str:
    """`text` on one line: control characters (a newline in a file name or label) shown escaped."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode() for ch in text)


def warn(message: str) -> None:
    """One warning line on stderr, written around any progress bar."""
    from tqdm import tqdm

    tqdm.write(f"warning: {one_line(message)}", file=sys.stderr)
