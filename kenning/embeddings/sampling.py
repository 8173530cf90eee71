"""P x K class-balanced batches, and what to do with classes that have fewer than K images."""

from __future__ import annotations

import pandas as pd
import torch
from pytorch_metric_learning.samplers import MPerClassSampler

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


def create_sampler(targets: torch.Tensor, classes_per_batch: int, images_per_class: int) -> MPerClassSampler:
    """An epoch is about one pass over the images, in batches of P classes x K images each."""
    n_classes = int(targets.max()) + 1
    batch_size = min(classes_per_batch, n_classes) * images_per_class
    return MPerClassSampler(
        targets,
        m=images_per_class,
        batch_size=batch_size,
        length_before_new_iter=max(batch_size, len(targets) // batch_size * batch_size),
    )
