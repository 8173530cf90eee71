"""An exclusive lock on an index directory, so concurrent writers (enroll, forget, compact, build)
take turns instead of each committing a manifest that drops the other's additions.

`flock` on a lock file: it holds between processes on one machine and is released by the
kernel when a process dies, so a killed enroll never leaves the index locked.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kenning.errors import KenningError

LOCK_FILE = "index.lock"


@contextmanager
def index_lock(directory: Path, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold the lock of an existing `directory` (creating it is the caller's choice: only a build does)."""
    with open(directory / LOCK_FILE, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise KenningError(
                        f"index {directory} is locked by another process for over {timeout_s:.0f}s"
                    ) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
