"""Real processes for the tests that need them: writers racing on one index, runs killed midway."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def run_together(target: Callable[..., None], args: Sequence[tuple], timeout_s: float = 120) -> None:
    """Start one spawned process per argument tuple at once, wait for all; each must exit 0."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=target, args=a) for a in args]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout_s)
        assert worker.exitcode == 0, worker.exitcode


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], group: bool = False, timeout_s: float = 300) -> int:
    """SIGKILL `proc` (with `group`: its whole session, as a lost machine would) as soon as `ready()`
    holds, or it ended, or `timeout_s` passed; returns its exit status."""
    deadline = time.monotonic() + timeout_s
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGKILL)
    status = proc.wait()
    if group:  # the launcher's children are not ours to wait for: until they are gone, they hold their locks
        while _alive_in_group(proc.pid) and time.monotonic() < deadline + 60:
            time.sleep(0.01)
    return status


def _alive_in_group(group: int) -> bool:
    """Whether a process of process group `group` still runs (zombies, whose files are closed, do not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):
            continue  # ended while we looked
        if int(pgrp) == group and state not in "ZX":
            return True
    return False
