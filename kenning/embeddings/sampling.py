"""P x K class-balanced batches, and what to do with classes that have fewer than K images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from pytorch_metric_learning.samplers import MPerClassSampler

from kenning.embeddings.distributed import Ranks
from kenning.errors import KenningError


def apply_small_class_policy(train: pd.DataFrame, images_per_class: int, policy: str) -> pd.DataFrame:
    """`repeat`: keep every class; the sampler draws a small class's images again (each draw is
    augmented anew, so a one-photo identity still gets positives). `drop`: train only on classes with
    at least K images (they still count for nothing else: no negatives, no positives)."""
    if policy == "repeat":
        return train
    counts = train["label"].value_counts()
    kept = train[train["label"].map(counts) >= images_per_class].reset_index(drop=True)
    if kept["label"].nunique() < 2:
        raise KenningError(
            f"train.small_classes=drop leaves {kept['label'].nunique()} identities with {images_per_class}+ images; "
            "use repeat or a smaller train.images_per_class"
        )
    return kept


def create_sampler(
    targets: torch.Tensor, classes_per_batch: int, images_per_class: int, ranks: Ranks | None = None, seed: int = 0
) -> MPerClassSampler | DistributedPKSampler:
    """An epoch is about one pass over the images, in batches of P classes x K images each (per rank)."""
    if ranks is not None and ranks.active:
        return DistributedPKSampler(targets.numpy(), classes_per_batch, images_per_class, ranks, seed)
    n_classes = int(targets.max()) + 1
    batch_size = min(classes_per_batch, n_classes) * images_per_class
    return MPerClassSampler(
        targets,
        m=images_per_class,
        batch_size=batch_size,
        length_before_new_iter=max(batch_size, len(targets) // batch_size * batch_size),
    )


class DistributedPKSampler(torch.utils.data.Sampler[int]):
    """P x K batches for one rank of a distributed run: every step, the ranks take disjoint P-class
    slices of one draw, so the global batch holds world x P different classes.

    Hand-written because pytorch-metric-learning's MPerClassSampler has no notion of ranks and draws
    from numpy's global generator. Here an epoch's batches are a function of (seed, epoch) alone:
    every rank computes the same draw without talking to the others, and a resumed run repeats it
    without any saved sampler state (`set_epoch` before each epoch, as with DistributedSampler).
    """

    def __init__(self, targets: np.ndarray, classes_per_batch: int, images_per_class: int, ranks: Ranks, seed: int):
        targets = np.asarray(targets)
        self.by_class = [np.flatnonzero(targets == c) for c in np.unique(targets)]
        self.p = min(classes_per_batch, len(self.by_class) // ranks.world)
        if self.p < 1:
            raise KenningError(
                f"{ranks.world} processes need at least {ranks.world} training identities (one each per step), "
                f"found {len(self.by_class)}"
            )
        self.k = images_per_class
        self.batch_size = self.p * self.k
        self.steps = max(1, len(targets) // (self.batch_size * ranks.world))  # about one pass over the images
        self.ranks, self.seed, self.epoch = ranks, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps * self.batch_size

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        per_step = self.p * self.ranks.world
        order = np.zeros(0, dtype=np.int64)
        for _ in range(self.steps):
            if len(order) < per_step:  # a fresh permutation: no class twice in one global batch
                order = rng.permutation(len(self.by_class))
            step, order = order[:per_step], order[per_step:]
            drawn = [rng.choice(self.by_class[c], self.k, replace=len(self.by_class[c]) < self.k) for c in step]
            mine = drawn[self.ranks.rank * self.p : (self.ranks.rank + 1) * self.p]
            yield from (int(i) for images in mine for i in images)
