"""Open-set figures: how well the best-match similarity separates known from unknown queries, and
how well the answers do on each kind."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def known_unknown_auroc(best_similarity: np.ndarray, known: np.ndarray) -> float | None:
    """AUROC of the best-match similarity as a known-vs-unknown score (1: every known query matches
    closer than every unknown one; 0.5: chance). Equal to the AUROC of the match distance, with the
    sign turned. None without queries of both kinds."""
    known = np.asarray(known, dtype=bool)
    if known.all() or not known.any():
        return None
    return float(roc_auc_score(known, np.asarray(best_similarity, dtype=np.float64)))


def false_accept_rate(best_similarity: np.ndarray, known: np.ndarray, threshold: float | None) -> float | None:
    """Share of unknown queries matched at or above the threshold, i.e. answered with a known label
    first. No threshold accepts everything (1.0). None without unknown queries."""
    unknown = ~np.asarray(known, dtype=bool)
    if not unknown.any():
        return None
    if threshold is None:
        return 1.0
    return float((np.asarray(best_similarity)[unknown] >= threshold).mean())


def balanced_open_set(
    actual: np.ndarray, top: np.ndarray, known: np.ndarray, identities: np.ndarray, unknown_label: str
) -> dict[str, float | None]:
    """AnimalCLEF 2025's open-set score: BAKS, the accuracy of the first answer on known queries
    averaged per identity; BAUS, the share of unknown queries answered unknown averaged per (new)
    identity; `balanced`, their geometric mean. Answering unknown for everything scores 0 on it,
    which MAP@5 rewards when matching is weak. `identities`: each query's true identity (a new
    one's too, where it is known; else anything unique per query). None without queries of a kind."""
    known = np.asarray(known, dtype=bool)
    top, actual = np.asarray(top, dtype=object), np.asarray(actual, dtype=object)
    right = np.where(known, top == actual, top == unknown_label)
    identities = np.asarray(identities, dtype=object)
    baks = _mean_per_identity(right[known], identities[known])
    baus = _mean_per_identity(right[~known], identities[~known])
    balanced = None if baks is None or baus is None else float(np.sqrt(baks * baus))
    return {"baks": baks, "baus": baus, "balanced": balanced}


def _mean_per_identity(right: np.ndarray, identities: np.ndarray) -> float | None:
    if len(right) == 0:
        return None
    _, group = np.unique(identities.astype(str), return_inverse=True)
    return float((np.bincount(group, weights=right.astype(np.float64)) / np.bincount(group)).mean())
