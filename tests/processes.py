"""Real processes for the tests that need them: writers racing on one index, runs killed midway."""

from __future__ import annotations

import contextlib
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


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], tree: bool = False, timeout_s: float = 300) -> int:
    """SIGKILL `proc` (with `tree`: it and every process under it at once, as a lost machine would) as
    soon as `ready()` holds, or it ended, or `timeout_s` passed; returns its exit status."""
    deadline = time.monotonic() + timeout_s
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    doomed = _stopped_tree(proc.pid) if tree else {proc.pid}
    for pid in doomed:
        _signal(pid, signal.SIGKILL)
    status = proc.wait()
    while any(_running(pid) for pid in doomed) and time.monotonic() < deadline + 60:
        time.sleep(0.01)  # until the last is gone it holds its locks; torchrun's workers are not ours to wait for
    return status


def _stopped_tree(root: int) -> set[int]:
    """`root` and its descendants, all stopped (SIGSTOP), so none can start another before the kill.

    Descendants, not a process group: torchrun starts each worker in a session of its own."""
    pids: set[int] = set()
    while (found := _descendants(root) | {root}) != pids:
        pids = found
        for pid in pids:
            _signal(pid, signal.SIGSTOP)
    return pids


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        if fields := _stat(stat):
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already ended
        os.kill(pid, sig)


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, whose files are closed, does not)."""
    fields = _stat(Path(f"/proc/{pid}/stat"))
    return bool(fields) and fields[0] not in "ZX"


def _stat(path: Path) -> list[str] | None:
    """A /proc stat line's fields after the command name (state, ppid, ...); None once it ended."""
    try:
        return path.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
