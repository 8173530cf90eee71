import pandas as pd
import pytest
import torch

from kenning.embeddings.sampling import apply_small_class_policy, create_sampler
from kenning.errors import KenningError


def _table(counts: dict[str, int]) -> pd.DataFrame:
    labels = [lab for lab, n in counts.items() for _ in range(n)]
    return pd.DataFrame({"path": [f"{lab}_{i}" for i, lab in enumerate(labels)], "label": labels})


def test_repeat_keeps_small_classes_and_drop_removes_them() -> None:
    table = _table({"a": 1, "b": 2, "c": 4, "d": 5})
    assert len(apply_small_class_policy(table, 4, "repeat")) == len(table)
    kept = apply_small_class_policy(table, 4, "drop")
    assert set(kept["label"]) == {"c", "d"}
    with pytest.raises(KenningError, match="small_classes=drop"):
        apply_small_class_policy(table, 5, "drop")


def test_batches_hold_p_classes_of_k_images_and_repeat_one_photo_identities() -> None:
    targets = torch.tensor([0] + [1] * 2 + [2] * 6 + [3] * 6 + [4] * 3)
    sampler = create_sampler(targets, classes_per_batch=3, images_per_class=2)
    # epochs are drawn at random: over 20 of them the singleton is drawn (a miss in one epoch happens)
    order = [i for _ in range(20) for i in iter(sampler)]
    assert len(order) % 6 == 0
    saw_singleton_pair = False
    for b in range(0, len(order), 6):
        labels = targets[order[b : b + 6]]
        values, counts = labels.unique(return_counts=True)
        assert len(values) == 3 and (counts == 2).all()
        saw_singleton_pair |= 0 in values.tolist()
    assert saw_singleton_pair  # the one-photo identity is drawn twice (two augmentations = a positive pair)
