"""Choose the similarity below which the answer is `unknown`, on identities the model never saw."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kenning.eval.metrics import map_at_k
from kenning.index.voting import RankedLabels, place_unknown


@dataclass
class Calibration:
    threshold: float
    map5: float
    curve: list[tuple[float, float]]  # (threshold, MAP@5)
    queries: int
    unknown_queries: int


def calibrate_threshold(
    ranked: Sequence[RankedLabels], actual: Sequence[str], unknown_label: str, steps: int = 101
) -> Calibration:
    """Sweep thresholds over the observed best similarities; keep the one with the highest MAP@5.

    Of a plateau of equally good thresholds the middle one is taken, the choice least sensitive
    to the held-out sample.
    """
    best_sims = np.array([r.best_similarity for r in ranked])
    grid = np.unique(np.quantile(best_sims, np.linspace(0, 1, steps))) if len(best_sims) else np.array([0.0])
    grid = np.concatenate([[grid[0] - 1e-6], grid, [grid[-1] + 1e-6]])  # never / always unknown
    scores = np.array(
        [map_at_k(actual, [place_unknown(r, float(t), unknown_label).labels for r in ranked]) for t in grid]
    )
    best = np.flatnonzero(scores == scores.max())
    i = int(best[len(best) // 2])
    return Calibration(
        threshold=float(grid[i]),
        map5=float(scores[i]),
        curve=[(float(t), float(s)) for t, s in zip(grid, scores, strict=True)],
        queries=len(ranked),
        unknown_queries=sum(a == unknown_label for a in actual),
    )
