"""Several processes, one run: the process group torchrun sets up, and what the ranks share.

torchrun (`torchrun --nproc_per_node N -m kenning train-embed ...`, across machines with
`--nnodes` and a rendezvous endpoint) starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK
and the rendezvous address in their environment; `process_group` joins them (gloo on CPU, NCCL
on CUDA). Without torchrun every helper here is the one-process identity, so the training code
has one path. Rank 0 is the writer: checkpoints, curves and the model directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched_ranks() -> Ranks:
    """This process's place in a torchrun launch (one process of one when not launched)."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    return Ranks(int(env["RANK"]), world, int(env.get("LOCAL_RANK", "0")), int(env.get("LOCAL_WORLD_SIZE", str(world))))


@contextmanager
def process_group(device_name: str = "auto") -> Iterator[Ranks]:
    """Join torchrun's process group for the block (a no-op without torchrun, or when already joined)."""
    ranks = launched_ranks()
    if not ranks.active or dist.is_initialized():
        yield ranks
        return
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield ranks
    finally:
        dist.destroy_process_group()


def from_main(ranks: Ranks, make: Callable[[], T]) -> T:
    """`make()` on rank 0, the same object on every rank (pickled through the process group)."""
    if not ranks.active:
        return make()
    box = [make() if ranks.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(ranks: Ranks, obj: T) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not ranks.active:
        return [obj]
    out: list = [None] * ranks.world
    dist.all_gather_object(out, obj)
    return out


def sum_over_ranks(ranks: Ranks, *values: float) -> list[float]:
    if not ranks.active:
        return list(values)
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def shard_bounds(n: int, ranks: Ranks) -> tuple[int, int]:
    """The contiguous slice [lo, hi) of n items this rank works on (sizes differ by at most one)."""
    per, extra = divmod(n, ranks.world)
    lo = ranks.rank * per + min(ranks.rank, extra)
    return lo, lo + per + (ranks.rank < extra)


def barrier(ranks: Ranks) -> None:
    if ranks.active:
        dist.barrier()
