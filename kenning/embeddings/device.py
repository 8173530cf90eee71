"""Device choice: CUDA when present, CPU otherwise; one GPU, or a share of the cores, per local process."""

from __future__ import annotations

import os

import torch


def select_device(name: str = "auto", local_rank: int = 0, local_processes: int = 1) -> torch.device:
    """`local_rank` / `local_processes`: this process's place among those torchrun started on this machine."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_processes > 1:
        return torch.device("cuda", local_rank)
    if name == "cpu" and hasattr(os, "sched_getaffinity"):  # all the cores this process may use, shared out
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_processes))
    return torch.device(name)
