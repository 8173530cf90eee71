"""Seconds per stage of the query path (read, search, lnbnn, verify, glue, decide): what a query
costs and where, reported by `query --json` beside its answers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimes:
    """Seconds spent in each stage since the last `reset`, summed over the images of a call. A
    service shares one recognizer between threads, so its figures mix requests: read them from one
    call at a time (the CLI)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def reset(self) -> None:
        self.seconds = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        return {stage: round(s, 4) for stage, s in self.seconds.items()}
