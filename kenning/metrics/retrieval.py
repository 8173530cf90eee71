"""Kaggle-exact MAP@5 (Humpback Whale Identification) and GAP (Google Landmark Recognition), Recall@K,
R-precision and mAP@R."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_precision_at_k(actual: str, predicted: Sequence[str], k: int = 5) -> float:
    """Kaggle's `apk` with one true label: 1/position of its first occurrence in the top k, else 0.

    Positions count every entry, repeats included; a repeated true label scores once.
    """
    for position, label in enumerate(predicted[:k], start=1):
        if label == actual:
            return 1.0 / position
    return 0.0


def map_at_k(actual: Sequence[str], predicted: Sequence[Sequence[str]], k: int = 5) -> float:
    if len(actual) != len(predicted):
        raise ValueError(f"{len(actual)} truths for {len(predicted)} predictions")
    if not actual:
        return 0.0
    return float(np.mean([average_precision_at_k(a, p, k) for a, p in zip(actual, predicted, strict=True)]))


def global_average_precision(
    actual: Sequence[str | None],
    predicted: Sequence[str | None],
    confidence: Sequence[float],
    query_ids: Sequence[str] | None = None,
) -> float:
    """GAP (micro-AP) with one prediction per query.

    Predictions are pooled and sorted by confidence, descending (ties: query id, then label);
    precision is summed at each correct prediction and divided by the number of queries that have
    a landmark (`actual` not None). A prediction on a non-landmark query counts in the precision
    but is never correct; a query with no prediction (None) only loses its positive.
    """
    n = len(actual)
    if not (len(predicted) == len(confidence) == n):
        raise ValueError("actual, predicted and confidence must have the same length")
    query_ids = list(query_ids) if query_ids is not None else [f"{i:012d}" for i in range(n)]
    positives = sum(a is not None for a in actual)
    if positives == 0:
        return 0.0
    made = [i for i in range(n) if predicted[i] is not None]
    made.sort(key=lambda i: (-confidence[i], query_ids[i], str(predicted[i])))
    correct, total = 0, 0.0
    for rank, i in enumerate(made, start=1):
        if actual[i] is not None and predicted[i] == actual[i]:
            correct += 1
            total += correct / rank
    return total / positives


def recall_at_k(actual: Sequence[str], neighbour_labels: np.ndarray, k: int) -> float:
    """Share of queries with the true label among their k nearest neighbours (Recall@K of retrieval)."""
    if len(actual) == 0:
        return 0.0
    hits = (neighbour_labels[:, :k] == np.asarray(actual, dtype=object)[:, None]).any(axis=1)
    return float(hits.mean())


def retrieval_precision(neighbour_labels: np.ndarray, actual: Sequence[str], relevant: np.ndarray) -> dict[str, float]:
    """Precision@1, R-precision and mAP@R as pytorch-metric-learning's AccuracyCalculator defines them.

    Computed here from the index's own neighbour lists (approximate backends and side index
    included), which AccuracyCalculator cannot take: it searches its own exact FAISS index.
    `relevant[i]` is R, the number of gallery images with query i's label (itself excluded);
    neighbour_labels must hold at least max(R) columns. Queries with R = 0 are left out, as there.
    """
    relevant = np.asarray(relevant, dtype=np.int64)
    keep = relevant > 0
    if not keep.any():
        return {"precision@1": float("nan"), "r_precision": float("nan"), "map@r": float("nan")}
    if neighbour_labels.shape[1] < relevant.max():
        raise ValueError(f"R-precision needs {relevant.max()} neighbours, got {neighbour_labels.shape[1]}")
    labels, r = neighbour_labels[keep], relevant[keep]
    truth = np.asarray(actual, dtype=object)[keep]
    hit = labels == truth[:, None]
    within_r = np.arange(labels.shape[1])[None, :] < r[:, None]
    hit_r = hit & within_r
    precision_at = np.cumsum(hit_r, axis=1) / np.arange(1, labels.shape[1] + 1)
    return {
        "precision@1": float(hit[:, 0].mean()),
        "r_precision": float((hit_r.sum(axis=1) / r).mean()),
        "map@r": float(((precision_at * hit_r).sum(axis=1) / r).mean()),
    }
