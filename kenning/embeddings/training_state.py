"""Everything a killed training run needs to continue exactly: weights, optimiser, schedule, RNGs."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kenning.atomic import ANY_TEMPORARY, atomic_save, sweep_temporaries
from kenning.errors import KenningError
from kenning.locks import folder_lock

CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
TRAIN_LOCK = "train.lock"
# keys that change where or how fast a run goes, never what it computes
RESUMABLE_DIFFERENCES = {"train.device", "train.num_workers", "train.cache_dir"}


@contextmanager
def training_run(out: Path) -> Iterator[None]:
    """Hold a model folder for one training run: a second run into it is refused at once (it would
    overwrite the first's checkpoints), and the temporaries a killed run left (a full-size
    `.last.pt.*.tmp`) are swept, since no other run can be writing them."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock_was_there = (out / TRAIN_LOCK).exists()
    busy = f"{out} is being trained by another process: wait for it to end, or choose another --out"
    finished = False
    try:
        with folder_lock(out / TRAIN_LOCK, 0, busy):
            for folder in (out, out / CHECKPOINTS):
                sweep_temporaries(folder, ANY_TEMPORARY)
            yield
            finished = True
    finally:
        if created and [p.name for p in out.iterdir()] == [TRAIN_LOCK]:  # refused before writing anything
            (out / TRAIN_LOCK).unlink()
            out.rmdir()
        elif not finished and not lock_was_there and not (out / "manifest.json").exists():
            (out / TRAIN_LOCK).unlink(missing_ok=True)  # refused in a folder that is not yet a model: no litter


def capture_rng() -> dict[str, Any]:
    """The three generators training draws from: torch (augmentations, views), numpy (the
    P x K sampler), Python's random (timm's crops); numpy's state is stored as tensors so the
    checkpoint loads with torch.load(weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_state(out: str | Path, name: str, state: dict[str, Any]) -> None:
    atomic_save(Path(out) / CHECKPOINTS / name, lambda p: torch.save(state, p))


def load_state(out: str | Path, name: str) -> dict[str, Any] | None:
    path = Path(out) / CHECKPOINTS / name
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file surfaces as many exception types
        raise KenningError(f"cannot read training checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not _is_training_state(state):  # another tool's last.pt: never resumed from, never overwritten
        raise KenningError(f"{path} is not a Kenning training checkpoint: choose another --out")
    return state


def _is_training_state(state: Any) -> bool:
    """What `save_state` wrote: the epoch and weights, and for the last epoch the run's config."""
    if not isinstance(state, dict) or not {"epoch", "model", "loss"} <= state.keys():
        return False
    numbers = [state["epoch"]]
    if "config" in state or "optimizer" in state:  # LAST: what a resume reads
        config = state.get("config")
        train = config.get("train") if isinstance(config, dict) else None
        numbers.append(train.get("epochs") if isinstance(train, dict) else None)
    return all(isinstance(v, int) and not isinstance(v, bool) for v in numbers)


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two Config.to_dict() trees, minus the harmless ones."""

    def flat(tree: dict[str, Any]) -> dict[str, Any]:
        return {f"{name}.{key}": value for name, section in tree.items() for key, value in section.items()}

    before, after = flat(saved), flat(current)
    return sorted(k for k in (before.keys() | after.keys()) - RESUMABLE_DIFFERENCES if before.get(k) != after.get(k))
