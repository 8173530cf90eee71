"""k-nearest-neighbour voting: neighbours -> top-5 labels with confidences, `unknown` placed by threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Neighbours:
    """One row per query: its nearest gallery images, best first."""

    similarities: np.ndarray  # (n, k), -inf where there is no neighbour
    labels: np.ndarray  # (n, k) of str, "" where there is no neighbour
    ids: np.ndarray | None = None  # (n, k) gallery ids, -1 where there is no neighbour


@dataclass
class RankedLabels:
    """Labels of one query's neighbours, best first, before the unknown answer is placed."""

    labels: list[str]
    confidences: list[float]
    match_scores: list[float]  # each label's score on the rule's scale, what its unknown threshold is
    # set on: the nearest neighbour's similarity (votes), the fused probability (fused)
    parts: list[dict[str, float]] | None = None  # with local matching: each label's score parts

    @property
    def best_similarity(self) -> float:
        """The best label's score (named for the common case: a similarity)."""
        return max(self.match_scores, default=-1.0)


@dataclass
class Prediction:
    labels: list[str]
    confidences: list[float | None]  # None for the unknown answer: it wins no vote to measure
    best_similarity: float
    parts: list[dict[str, float] | None] | None = None  # with local matching: each answer's score parts
    decision: str | None = None  # match, review or new (decision/review.py); None: not decided yet


def rank_labels(similarities: np.ndarray, labels: np.ndarray, power: float) -> RankedLabels:
    """Similarity-weighted vote: w = max(sim, 0) ** power per neighbour.

    A label's confidence is its share of the vote times its nearest similarity, so it is high only
    when the label both wins the vote and matches closely; that keeps confidences comparable across
    queries (GAP ranks predictions of all queries by them).
    """
    valid = np.isfinite(similarities)
    sims, labs = similarities[valid].astype(np.float64), labels[valid]
    if len(sims) == 0:
        return RankedLabels([], [], [])
    weights = np.clip(sims, 0.0, None) ** power
    total = weights.sum()
    uniq, inverse = np.unique(labs, return_inverse=True)
    votes = np.bincount(inverse, weights=weights, minlength=len(uniq))
    nearest = np.full(len(uniq), -np.inf)
    np.maximum.at(nearest, inverse, sims)
    share = votes / total if total > 0 else np.full(len(uniq), 1.0 / len(uniq))
    conf = share * np.clip(nearest, 0.0, None)
    order = np.lexsort((uniq, -nearest, -conf))  # confidence, then closeness, then name: deterministic
    return RankedLabels(
        [str(uniq[i]) for i in order], [float(conf[i]) for i in order], [float(nearest[i]) for i in order]
    )


def place_unknown(ranked: RankedLabels, threshold: float | None, unknown_label: str, top: int = 5) -> Prediction:
    """Labels matched at or above `threshold` keep their order, then `unknown`, then the rest.

    So the answer is `unknown` first exactly when the best match is below the threshold; None
    never answers unknown. The unknown has no confidence (None): it is placed by the threshold, not
    by a share of the vote, and a number on another scale would read as part of the ranking.
    """
    best = ranked.best_similarity
    parts = ranked.parts
    if threshold is None:
        return Prediction(ranked.labels[:top], ranked.confidences[:top], best, None if parts is None else parts[:top])
    close = [i for i, s in enumerate(ranked.match_scores) if s >= threshold]
    far = [i for i, s in enumerate(ranked.match_scores) if s < threshold]
    labels = [ranked.labels[i] for i in close] + [unknown_label] + [ranked.labels[i] for i in far]
    confs = [ranked.confidences[i] for i in close] + [None] + [ranked.confidences[i] for i in far]
    placed = None if parts is None else [parts[i] for i in close] + [None] + [parts[i] for i in far]
    return Prediction(labels[:top], confs[:top], best, None if placed is None else placed[:top])
