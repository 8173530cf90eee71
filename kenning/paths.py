"""What a path given by the user is, checked before it is read or written, in one line when it is wrong.

`Path.is_file()` is False for a folder, a FIFO and a device alike, so "not found" would be the
wrong diagnosis; and opening a FIFO blocks, and `/dev/zero` never ends. Every input file goes
through `require_file`, every output through `require_output_file` / `require_output_dir`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from kenning.errors import KenningError

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def path_kind(path: str | Path) -> str | None:
    """'a regular file', 'a folder', 'a FIFO (named pipe)', ... or None when nothing is there."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except NotADirectoryError:  # a parent of the path is a file
        return None
    except OSError as exc:
        raise KenningError(f"cannot access {path}: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def require_file(path: str | Path, what: str = "file") -> Path:
    """`path` as a Path when it is a regular file; else one line saying what it is instead."""
    path = Path(path)
    kind = path_kind(path)
    if kind is None:
        raise KenningError(f"{what} not found: {path}")
    if kind != "a regular file":
        raise KenningError(f"{what} {path} is {kind}, not a file")
    return path


def require_output_file(path: str | Path, what: str = "output file") -> Path:
    """A file Kenning may (over)write: missing, or a regular file; its parent, if present, a folder."""
    path = Path(path)
    kind = path_kind(path)
    if kind is not None and kind != "a regular file":
        raise KenningError(f"cannot write {what} {path}: it is {kind}")
    parent = next((p for p in path.parents if path_kind(p) is not None), None)
    if parent is not None and path_kind(parent) != "a folder":
        raise KenningError(f"cannot write {what} {path}: {parent} is {path_kind(parent)}, not a folder")
    return path


def holds_only(directory: Path, names: set[str]) -> bool:
    """Whether every entry of `directory` is one of `names` or a temporary of a killed atomic write:
    a folder Kenning wrote, and nobody else."""
    from kenning.atomic import ANY_TEMPORARY

    return all(p.name in names or ANY_TEMPORARY.match(p.name) for p in directory.iterdir())


def require_output_dir(path: str | Path, what: str, is_ours: Callable[[Path], bool] | None = None) -> Path:
    """A folder Kenning may write into: missing, empty, or (when `is_ours` is given) one it made.

    Kenning never deletes or overwrites what it did not create, so a non-empty folder that is not
    one of its own is refused rather than written into."""
    path = Path(path)
    kind = path_kind(path)
    if kind is None:
        parent = next((p for p in path.parents if path_kind(p) is not None), None)
        if parent is not None and path_kind(parent) != "a folder":
            raise KenningError(f"cannot create {what} {path}: {parent} is {path_kind(parent)}, not a folder")
        return path
    if kind != "a folder":
        raise KenningError(f"{what} {path} is {kind}, not a folder")
    if is_ours is not None and any(path.iterdir()) and not is_ours(path):
        raise KenningError(
            f"{path} is not empty and is not a Kenning {what}: refusing to write into it (choose a new or empty folder)"
        )
    return path
