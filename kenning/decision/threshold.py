"""Choose the similarity below which the answer is `unknown`, on identities the model never saw.

The objective is a choice: MAP@5 (Humpback: where to place new_whale), GAP (Landmark: which
answers to withhold), or a target false-accept rate (a catalogue that must rarely name a
stranger as a known identity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from kenning.decision.voting import RankedLabels, place_unknown
from kenning.errors import KenningError
from kenning.metrics.answers import answer_metrics

OBJECTIVES = ("map@5", "gap", "far")


@dataclass
class SweepPoint:
    threshold: float
    map5: float
    gap: float | None  # None only in indexes calibrated before GAP was swept
    far: float | None  # unknown queries answered with a known label first
    known_accuracy: float | None


@dataclass
class Calibration:
    threshold: float
    objective: str
    target_far: float | None
    chosen: SweepPoint
    curve: list[SweepPoint]
    queries: int
    unknown_queries: int

    def to_dict(self) -> dict:
        """What the index manifest stores (JSON)."""
        return {
            "objective": self.objective,
            "target_far": self.target_far,
            "map@5": self.chosen.map5,
            "gap": self.chosen.gap,
            "far": self.chosen.far,
            "queries": self.queries,
            "unknown_queries": self.unknown_queries,
            "curve": [asdict(p) for p in self.curve],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], threshold: float | None) -> Calibration | None:
        """What `to_dict` stored beside `threshold`; None for a threshold set by hand (no curve)."""
        if not data.get("curve") or threshold is None:
            return None
        try:
            if "objective" not in data:  # indexes built before the objective was a choice: MAP@5, no GAP curve
                chosen = SweepPoint(threshold, float(data["map5"]), None, None, None)
                return cls(threshold, "map@5", None, chosen, [], int(data["queries"]), int(data["unknown_queries"]))
            keys = {f.name for f in fields(SweepPoint)}
            curve = [SweepPoint(**{k: v for k, v in p.items() if k in keys}) for p in data["curve"]]
            chosen = SweepPoint(threshold, float(data["map@5"]), float(data["gap"]), _optional(data["far"]), None)
            return cls(
                threshold,
                str(data["objective"]),
                _optional(data["target_far"]),
                chosen,
                curve,
                int(data["queries"]),
                int(data["unknown_queries"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise KenningError("the index's threshold calibration is damaged: rebuild the index") from None

    def describe(self) -> str:
        """One line for people: how the threshold was chosen and what it scored."""
        if self.chosen.gap is None:
            return f"calibrated for map@5 on {self.queries} held-out queries: MAP@5 {self.chosen.map5:.4f}"
        goal = f"false-accept rate <= {self.target_far:.3f}" if self.objective == "far" else self.objective
        far = "-" if self.chosen.far is None else f"{self.chosen.far:.3f}"
        return (
            f"calibrated for {goal} on {self.queries} held-out queries, {self.unknown_queries} of them new: "
            f"MAP@5 {self.chosen.map5:.4f}, GAP {self.chosen.gap:.4f}, false-accept rate {far}"
        )


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def describe_calibration(calibration: Calibration | None) -> str:
    """One line for people: how a threshold was chosen (by hand, or by which calibration)."""
    return "set by hand" if calibration is None else calibration.describe()


def threshold_grid(best_similarity: np.ndarray, steps: int = 101) -> np.ndarray:
    """Quantiles of the observed best similarities, plus one below all (never unknown) and one above
    all (always unknown)."""
    if len(best_similarity) == 0:
        return np.array([0.0])
    grid = np.unique(np.quantile(best_similarity, np.linspace(0, 1, steps)))
    return np.concatenate([[grid[0] - 1e-6], grid, [grid[-1] + 1e-6]])


def sweep(
    ranked: Sequence[RankedLabels],
    actual: Sequence[str],
    unknown_label: str,
    thresholds: np.ndarray,
    query_ids: Sequence[str] | None = None,
) -> list[SweepPoint]:
    """MAP@5, GAP, false-accept rate and known accuracy of the answers at each threshold.

    GAP takes the first answer with its confidence and no prediction when it is unknown; queries
    whose truth is the unknown label are the non-landmarks."""
    truth = np.asarray(actual, dtype=object)
    known = truth != unknown_label
    ids = list(query_ids) if query_ids is not None else [f"{i:012d}" for i in range(len(truth))]
    points = []
    for t in thresholds:
        answers = [place_unknown(r, float(t), unknown_label) for r in ranked]
        m = answer_metrics(truth, known, answers, ids, unknown_label, float(t))
        points.append(SweepPoint(float(t), m["map@5"], m["gap"], m["false_accept_rate"], m["known_accuracy"]))
    return points


def calibrate_threshold(
    ranked: Sequence[RankedLabels],
    actual: Sequence[str],
    unknown_label: str,
    objective: str = "map@5",
    target_far: float = 0.05,
    steps: int = 101,
) -> Calibration:
    """Sweep thresholds over the observed best similarities and keep the best by `objective`.

    map@5 / gap: of a plateau of equally good thresholds the middle one, the choice least sensitive
    to the held-out sample. far: the lowest threshold whose false-accept rate is at most
    `target_far` (it accepts the most known queries within the budget).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"calibration objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    grid = threshold_grid(np.array([r.best_similarity for r in ranked]), steps)
    curve = sweep(ranked, actual, unknown_label, grid)
    if objective == "far":
        within = [i for i, p in enumerate(curve) if p.far is None or p.far <= target_far]
        i = within[0] if within else len(curve) - 1
    else:
        scores = np.array([p.map5 if objective == "map@5" else p.gap for p in curve])
        best = np.flatnonzero(scores == scores.max())
        i = int(best[len(best) // 2])
    return Calibration(
        threshold=curve[i].threshold,
        objective=objective,
        target_far=target_far if objective == "far" else None,
        chosen=curve[i],
        curve=curve,
        queries=len(ranked),
        unknown_queries=sum(a == unknown_label for a in actual),
    )
