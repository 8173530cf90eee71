"""One probability per identity from several scores: the global similarity, the local LNBNN score
and, where they are on, the RANSAC inlier count (`local.verify`) and the learned matcher's summed
match confidence (`local.glue`).

WildFusion (Cermak et al., 2024): each score is mapped to the probability that query and candidate
are the same identity by a monotone (isotonic) calibrator fitted on pairs of held-out identities;
the calibrated scores are averaged. The fused probability ranks the five answers, is their
confidence, and is what the unknown threshold is set on, so scores on different scales (a cosine,
an unbounded LNBNN sum) become comparable and a strong match in either stage counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

from kenning.decision.voting import RankedLabels
from kenning.errors import KenningError

PARTS = ("global", "local")  # always fused; OPTIONAL ones where their stage is on
INLIERS = "inliers"  # local.verify: RANSAC inliers
MATCHES = "matches"  # local.glue: the learned matcher's summed confidence
OPTIONAL = (INLIERS, MATCHES)
MIN_POSITIVES = 5  # same-identity pairs a calibrator needs; fewer cannot say how a score maps to a probability


@dataclass
class Candidates:
    """One query's candidate identities (from either stage) with each stage's score."""

    labels: list[str]
    scores: dict[str, np.ndarray]  # part -> (len(labels),) raw score: global cosine, local LNBNN sum, OPTIONAL


@dataclass
class Calibrator:
    """A monotone map from one raw score to P(same identity); stored as its breakpoints (linear
    between them, flat outside: what sklearn's isotonic predict does with out_of_bounds='clip')."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(scores, np.float64), self.x, self.y)

    @classmethod
    def fit(cls, scores: np.ndarray, same: np.ndarray) -> Calibrator:
        """Isotonic regression, then each of its flat steps replaced by one point at the step's
        middle: still monotone, but rising between steps, so two candidates in one step are not
        tied (a step function ranks a whole band of scores alike; measured on nyala's held-out
        identities, the interpolated form ranks the right identity first more often)."""
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(np.asarray(scores, np.float64), np.asarray(same, np.float64))
        x, y = np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_, np.float64)
        step = np.concatenate([[0], np.cumsum(np.diff(y) != 0)])
        counts = np.bincount(step)
        middle = np.bincount(step, weights=x) / counts
        return cls(middle, y[np.concatenate([[0], np.cumsum(counts)[:-1]])])

    def to_dict(self) -> dict[str, list[float]]:
        return {"x": [float(v) for v in self.x], "y": [float(v) for v in self.y]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        x, y = np.asarray(data["x"], np.float64), np.asarray(data["y"], np.float64)
        ok = x.ndim == 1 and x.shape == y.shape and len(x) > 0 and np.all(np.isfinite(x)) and np.all(np.isfinite(y))
        if not ok or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0) or y.min() < 0 or y.max() > 1:
            raise KenningError("a stored score calibrator is not monotone or not a probability: rebuild the index")
        return cls(x, y)


@dataclass
class Fusion:
    calibrators: dict[str, Calibrator]
    fitted_on: dict[str, Any] = field(default_factory=dict)  # pairs, positives, queries, model, where

    def probability(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        """Mean of the calibrated parts."""
        return np.mean([self.calibrators[p](scores[p]) for p in self.calibrators], axis=0)

    def to_dict(self) -> dict[str, Any]:
        return {"calibrators": {p: c.to_dict() for p, c in self.calibrators.items()}, "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fusion:
        try:
            calibrators = {p: Calibrator.from_dict(c) for p, c in data["calibrators"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise KenningError("the index's fusion calibrators are damaged: rebuild the index") from None
        if not set(PARTS) <= set(calibrators) <= {*PARTS, *OPTIONAL}:
            raise KenningError(f"the index's fusion calibrates {sorted(calibrators)}, not {list(PARTS)}: rebuild it")
        return cls(calibrators, dict(data.get("fitted_on", {})))


def pairs(candidates: Sequence[Candidates], actual: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every (query, candidate identity) pair: its scores and whether it is the same identity."""
    parts = _parts(candidates[0]) if candidates else PARTS
    scores = {p: np.concatenate([c.scores[p] for c in candidates]) if candidates else np.zeros(0) for p in parts}
    same = np.concatenate([np.array(c.labels, dtype=object) == a for c, a in zip(candidates, actual, strict=True)])
    return scores, same.astype(bool)


def fit_fusion(candidates: Sequence[Candidates], actual: Sequence[str], **fitted_on: Any) -> Fusion:
    """Isotonic calibrators of each part, fitted on the candidate pairs of labelled queries."""
    scores, same = pairs(candidates, actual)
    if same.sum() < MIN_POSITIVES or (~same).sum() < MIN_POSITIVES:
        raise KenningError(
            f"cannot calibrate local matching: the calibration queries give {int(same.sum())} same-identity and "
            f"{int((~same).sum())} other candidate pairs, and each needs at least {MIN_POSITIVES}"
        )
    calibrators = {p: Calibrator.fit(scores[p], same) for p in scores}
    return Fusion(calibrators, {"pairs": len(same), "positives": int(same.sum()), **fitted_on})


def _parts(candidates: Candidates) -> tuple[str, ...]:
    return (*PARTS, *(p for p in OPTIONAL if p in candidates.scores))


def rank_fused(candidates: Candidates, fusion: Fusion) -> RankedLabels:
    """Identities by fused probability; each answer keeps its parts."""
    if not candidates.labels:
        return RankedLabels([], [], [], [])
    prob = fusion.probability(candidates.scores)
    names = np.array(candidates.labels, dtype=object)
    # ties (scores beyond a calibrator's range) go to the stronger local, then global match, then the name
    order = np.lexsort((names, -candidates.scores["global"], -candidates.scores["local"], -prob))
    shown = _parts(candidates)
    parts = [
        {**{p: round(float(candidates.scores[p][i]), 4) for p in shown}, "probability": round(float(prob[i]), 4)}
        for i in order
    ]
    probs = [float(prob[i]) for i in order]
    return RankedLabels([candidates.labels[i] for i in order], probs, probs, parts)
