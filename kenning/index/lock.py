"""The lock of an index directory, so concurrent writers (enroll, forget, compact, build) take
turns instead of each committing a manifest that drops the other's additions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kenning.locks import folder_lock

LOCK_FILE = "index.lock"


def index_lock(directory: Path, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold the lock of an existing `directory` (creating it is the caller's choice: only a build does)."""
    busy = f"index {directory} is locked by another process for over {timeout_s:.0f}s"
    return folder_lock(directory / LOCK_FILE, timeout_s, busy)
