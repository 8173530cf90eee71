"""Device choice: CUDA when present, CPU otherwise."""

from __future__ import annotations

import os

import torch


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu" and hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))  # all the cores this process may use
    return torch.device(name)
