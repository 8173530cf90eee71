"""An exclusive lock on a folder, for writers that must take turns (an index's) or must not run at
all side by side (two trainings into one model folder).

`flock` on a lock file: it holds between processes on one machine and is released by the
kernel when a process dies, so a killed writer never leaves the folder locked.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kenning.errors import KenningError


@contextmanager
def folder_lock(lock_file: Path, timeout_s: float, busy: str) -> Iterator[None]:
    """Hold `lock_file`'s lock, waiting up to `timeout_s` (0: not at all) before failing with `busy`."""
    with open(lock_file, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise KenningError(busy) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
