"""The figures of a system's answers, whatever produced them: MAP@5, GAP, accuracy on known and on
unknown queries, and how well the best-match score separates the two."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from kenning.metrics.open_set import balanced_open_set, false_accept_rate, known_unknown_auroc
from kenning.metrics.retrieval import global_average_precision, map_at_k


class Answer(Protocol):
    """What is scored of one query's answer (kenning.decision.voting.Prediction is one): described
    here, not imported, so the metrics stay a leaf."""

    labels: list[str]
    confidences: list[float | None]
    best_similarity: float


def answer_metrics(
    actual: np.ndarray,
    known: np.ndarray,
    predictions: Sequence[Answer],
    query_ids: Sequence[str],
    unknown_label: str,
    threshold: float | None,
    identities: Sequence[str] | None = None,
) -> dict[str, float | None]:
    """The figures of a system's answers, whatever produced them (k-NN voting, a classifier, a rule):
    Kaggle MAP@5 and GAP (the first answer, no prediction when it is unknown), accuracy on known and
    on unknown queries, AnimalCLEF's balanced open-set score (`identities`: each query's true
    identity, new ones' too; by default each unknown query counts alone), AUROC of the best-match
    score and the false-accept rate at `threshold`."""
    top = np.array([p.labels[0] if p.labels else unknown_label for p in predictions], dtype=object)
    best = np.array([p.best_similarity for p in predictions], dtype=np.float64)
    return {
        "map@5": map_at_k(list(actual), [p.labels for p in predictions]),
        "gap": global_average_precision(
            [a if k else None for a, k in zip(actual, known, strict=True)],
            [None if t == unknown_label else t for t in top],
            [top_confidence(p) for p in predictions],
            query_ids,
        ),
        "known_accuracy": float(np.mean(top[known] == actual[known])) if known.any() else None,
        "unknown_accuracy": float(np.mean(top[~known] == unknown_label)) if (~known).any() else None,
        **balanced_open_set(actual, top, known, _identities(actual, known, query_ids, identities), unknown_label),
        "auroc_known_vs_unknown": known_unknown_auroc(best, known),
        "false_accept_rate": false_accept_rate(best, known, threshold),
    }


def top_confidence(prediction: Answer) -> float:
    conf = prediction.confidences[0] if prediction.confidences else None
    return 0.0 if conf is None else conf


def _identities(
    actual: np.ndarray, known: np.ndarray, query_ids: Sequence[str], identities: Sequence[str] | None
) -> np.ndarray:
    if identities is not None:
        return np.asarray(identities, dtype=object)
    return np.where(known, actual, np.asarray([f"query {q}" for q in query_ids], dtype=object))
