"""Atomic file writes: a crash mid-write leaves the old file intact, never a half-written one.

The temporary file is `.<name>.<random>.tmp` beside the target; a writer killed mid-write leaves
it behind, and the owner of the folder sweeps such files (`sweep_temporaries`) when no writer can
be running. Files end with the mode the umask gives any new file (mkstemp would leave 0600, so a
catalogue shared by a group could not be read by its other members).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kenning.errors import KenningError


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success fsync it and rename it over `target`."""
    target = Path(target)
    if target.is_dir():
        raise KenningError(f"cannot write {target}: it is a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), new_file_mode())
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_save(target: str | Path, writer: Callable[[Path], Any]) -> None:
    """Call `writer(tmp_path)` and move the result over `target` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_save(target, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(target: str | Path, obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_array(target: str | Path, array: Any) -> None:
    import numpy as np

    def write(path: Path) -> None:
        with open(path, "wb") as fh:  # np.save(path) would append ".npy" to the temporary name
            np.save(fh, array, allow_pickle=False)

    atomic_save(target, write)


def new_file_mode() -> int:
    """The mode `open()` gives a new file under the process's umask (0o644 under the usual 022)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # Reading the umask means setting it; /proc tells it without that race where it exists.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_name(names: str) -> re.Pattern[str]:
    """The names `atomic_path` gives the temporaries of targets whose names match regex `names`."""
    return re.compile(rf"^\.(?:{names})\.[A-Za-z0-9_]+\.tmp$")


ANY_TEMPORARY = temporary_name(r".+")


def sweep_temporaries(directory: Path, pattern: re.Pattern[str]) -> list[str]:
    """Remove temporaries left by killed writers (call only while no writer can be running)."""
    swept = []
    for path in _entries(directory):
        if pattern.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            swept.append(path.name)
    return swept


def _entries(directory: Path) -> Iterable[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
