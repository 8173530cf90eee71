"""Frozen-backbone mode: pooled backbone features of every training image, computed once, kept on disk.

Each image gets one plain view (the eval transform, for validation) and `views` augmented ones
(training draws one at random per step), so a frozen run still sees augmentation. The file is
keyed by everything that changes its content (weights, transforms, images), so runs with other
heads, losses or learning rates reuse it, and a changed image or backbone never reads stale
features. Work is saved every chunk: a killed computation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from kenning.atomic import atomic_save
from kenning.data.images import ImageDataset, collate_skipping_bad
from kenning.embeddings.checkpoint import fingerprint
from kenning.embeddings.model import EmbeddingNet

Transform = Callable[[Image.Image], torch.Tensor]


def cache_key(model: EmbeddingNet, paths: Sequence[str], settings: dict) -> str:
    digest = hashlib.sha256(repr(sorted(settings.items())).encode())
    digest.update(f"{fingerprint(model.backbone)}|{fingerprint(model.pool)}".encode())
    for path in paths:
        stat = Path(path).stat() if Path(path).is_file() else None
        digest.update(f"{path}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}".encode())
    return digest.hexdigest()[:24]


class _Views:
    """Image -> (1 + views, 3, H, W): the plain view, then augmented ones seeded by image position,
    so the cache's content does not depend on chunking, workers or where a resume started."""

    def __init__(self, plain: Transform, augment: Transform, views: int, seed: int):
        self.plain, self.augment, self.views, self.seed = plain, augment, views, seed

    def __call__(self, image: Image.Image, position: int) -> torch.Tensor:
        random.seed(self.seed * 1_000_003 + position)  # timm's crops draw from `random`
        torch.manual_seed(self.seed * 1_000_003 + position)  # torchvision's jitter and rotation from torch
        return torch.stack([self.plain(image)] + [self.augment(image) for _ in range(self.views)])


class _PositionedDataset(ImageDataset):
    def __init__(self, paths: Sequence[str], views: _Views, first_position: int = 0):
        super().__init__(paths, transform=lambda image: image)
        self.views, self.first_position = views, first_position

    def __getitem__(self, i: int):
        image, position, error = super().__getitem__(i)
        return (None if image is None else self.views(image, self.first_position + i)), position, error


@torch.no_grad()
def cached_features(
    model: EmbeddingNet,
    paths: Sequence[str],
    plain: Transform,
    augment: Transform,
    views: int,
    seed: int,
    cache_dir: str | Path,
    settings: dict,
    device: torch.device,
    batch_size: int = 16,
    chunk: int = 256,
    progress: bool = True,
    first_position: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """-> features (n, 1 + views, C) float16, ok (n,) bool (False: the image could not be read), errors.

    `first_position`: where `paths` start in the whole list (a rank's shard), so that each image's
    augmented views are the ones a single process would cache for it."""
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    shard = {"first_position": first_position} if first_position else {}
    key = cache_key(model, paths, {**settings, "views": views, "seed": seed, **shard})
    done_file, partial_file = cache_dir / f"{key}.npz", cache_dir / f"{key}.partial.npz"
    if done_file.is_file():
        with np.load(done_file, allow_pickle=False) as saved:
            return saved["features"], saved["ok"], [str(e) for e in saved["errors"]]
    n, dim = len(paths), model.backbone.num_features
    features = np.zeros((n, 1 + views, dim), dtype=np.float16)
    ok = np.zeros(n, dtype=bool)
    errors: list[str] = []
    start = 0
    if partial_file.is_file():
        with np.load(partial_file, allow_pickle=False) as saved:
            start = int(saved["done"])
            features[:start], ok[:start], errors = saved["features"][:start], saved["ok"][:start], list(saved["errors"])
    model.eval().to(device)
    dataset = _PositionedDataset(paths, _Views(plain, augment, views, seed), first_position)
    bar = tqdm(total=n, initial=start, desc="caching backbone features", unit="img", disable=not progress)
    python_rng = random.getstate()  # the per-image seeding must not change what training draws next
    with torch.random.fork_rng(devices=[]):
        for lo in range(start, n, chunk):
            subset = torch.utils.data.Subset(dataset, range(lo, min(lo + chunk, n)))
            loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, collate_fn=collate_skipping_bad)
            for stacked, idx, batch_errors in loader:
                errors.extend(batch_errors)
                if stacked is not None:
                    flat = stacked.flatten(0, 1).to(device)
                    with torch.autocast(device.type, enabled=device.type == "cuda"):
                        pooled = model.pooled(flat).float()
                    features[idx.numpy()] = pooled.view(len(idx), 1 + views, dim).cpu().numpy()
                    ok[idx.numpy()] = True
                bar.update(len(idx) + len(batch_errors))
            done = min(lo + chunk, n)
            if done < n:
                atomic_save(
                    partial_file,
                    lambda p, d=done: _savez(p, features=features, ok=ok, errors=np.array(errors, dtype=str), done=d),
                )
    random.setstate(python_rng)
    bar.close()
    atomic_save(done_file, lambda p: _savez(p, features=features, ok=ok, errors=np.array(errors, dtype=str)))
    partial_file.unlink(missing_ok=True)
    return features, ok, errors


def _savez(path: Path, **arrays: np.ndarray | int) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a temporary name
        np.savez(f, **arrays)
