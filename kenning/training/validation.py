"""Leave-one-out retrieval figures of a labelled set of embeddings: each epoch's validation on held-out
identities, and protocol A; ranked through the same vote rule as `query` (decision/rules.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from kenning.decision.rules import Votes
from kenning.decision.voting import Neighbours
from kenning.index.faiss_index import FaissIndex
from kenning.index.topk import select_top
from kenning.metrics.retrieval import map_at_k, recall_at_k, retrieval_precision


def leave_one_out(
    vectors: np.ndarray,
    labels: Sequence[str],
    k: int = 10,
    power: float = 3.0,
    groups: Sequence[object] | None = None,
) -> dict[str, float]:
    """Each vector queries all the others, or with `groups` all but those of its own group (its
    sighting: protocol A). Queries whose label has no other member outside their group are left out.

    recall@1 / recall@5: a right label among the nearest 1 / 5 images; map@5: Kaggle MAP@5 of the
    labels k-NN voting answers (closed set); precision@1 and map@r as pytorch-metric-learning's
    AccuracyCalculator computes them (its code without groups; with groups, the same definitions on
    the neighbour lists that skip the group, which it cannot).
    """
    labels = np.asarray(labels, dtype=object)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    groups = np.arange(n) if groups is None else pd.factorize(pd.Series(list(groups), dtype=object))[0]
    same_group = pd.Series(labels).groupby([labels, groups]).transform("size").to_numpy()
    counts = pd.Series(labels).value_counts()
    available = np.array([counts[lab] for lab in labels]) - same_group
    has_match = available > 0
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
    members = pd.Series(np.arange(n)).groupby(groups).agg(list)
    excluded = [members[groups[i]] for i in rows]
    width_excluded = max(map(len, excluded))
    exclude = np.array([e + [-1] * (width_excluded - len(e)) for e in excluded], np.int64)
    r_max = int(available[rows].max())
    width = min(max(k, 5, r_max), n - 1)
    sims, ids = select_top(*index.search(vectors[rows], min(width + width_excluded, n)), width, exclude=exclude)
    neighbour_labels = np.where(ids >= 0, labels[np.maximum(ids, 0)], "")
    actual = labels[has_match]
    voted = [r.labels[:5] for r in Votes(k, power).rank(Neighbours(sims, neighbour_labels, ids))]
    if len(members) == n:  # every group a single image: pytorch-metric-learning's own computation
        codes = torch.from_numpy(pd.factorize(labels)[0])
        precision = AccuracyCalculator(
            include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count", device=torch.device("cpu")
        ).get_accuracy(torch.from_numpy(vectors), codes)
        precision = {"precision@1": precision["precision_at_1"], "map@r": precision["mean_average_precision_at_r"]}
    else:
        precision = retrieval_precision(neighbour_labels, actual, available[rows])
    return {
        "queries": int(has_match.sum()),
        "recall@1": recall_at_k(list(actual), neighbour_labels, 1),
        "recall@5": recall_at_k(list(actual), neighbour_labels, 5),
        "map@5": map_at_k(list(actual), voted),
        "precision@1": float(precision["precision@1"]),
        "map@r": float(precision["map@r"]),
    }
