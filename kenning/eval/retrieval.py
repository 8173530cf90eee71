"""Leave-one-out retrieval figures of a labelled set of embeddings (protocol A, training validation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from kenning.eval.metrics import map_at_k, recall_at_k
from kenning.index.faiss_index import FaissIndex
from kenning.index.topk import select_top
from kenning.index.voting import rank_labels


def leave_one_out(vectors: np.ndarray, labels: Sequence[str], k: int = 10, power: float = 3.0) -> dict[str, float]:
    """Each vector queries all the others. Queries whose label has no other member are left out.

    recall@1 / recall@5: a right label among the nearest 1 / 5 images; map@5: Kaggle MAP@5 of the
    labels k-NN voting answers (closed set); precision@1 and map@r exactly as pytorch-metric-learning's
    AccuracyCalculator computes them (its code, not a copy).
    """
    labels = np.asarray(labels, dtype=object)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    counts = pd.Series(labels).value_counts()
    has_match = np.array([counts[lab] > 1 for lab in labels])
    if n < 2 or not has_match.any():
        return {
            "queries": 0,
            "recall@1": float("nan"),
            "recall@5": float("nan"),
            "map@5": float("nan"),
            "precision@1": float("nan"),
            "map@r": float("nan"),
        }
    index = FaissIndex.create(vectors.shape[1], "Flat")
    index.add(vectors, np.arange(n))
    rows = np.flatnonzero(has_match)
    width = min(max(k, 5), n - 1)
    sims, ids = select_top(*index.search(vectors[rows], width + 1), width, exclude=rows)
    neighbour_labels = labels[ids]
    actual = labels[has_match]
    voted = [rank_labels(s[:k], lab[:k], power).labels[:5] for s, lab in zip(sims, neighbour_labels, strict=True)]
    codes = torch.from_numpy(pd.factorize(labels)[0])
    pml = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count", device=torch.device("cpu")
    ).get_accuracy(torch.from_numpy(vectors), codes)
    return {
        "queries": int(has_match.sum()),
        "recall@1": recall_at_k(list(actual), neighbour_labels, 1),
        "recall@5": recall_at_k(list(actual), neighbour_labels, 5),
        "map@5": map_at_k(list(actual), voted),
        "precision@1": float(pml["precision_at_1"]),
        "map@r": float(pml["mean_average_precision_at_r"]),
    }
