"""Open-set figures: how well the best-match similarity separates known from unknown queries."""

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
