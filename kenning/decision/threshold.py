"""Choose the similarity below which the answer is `unknown`, on identities the model never saw.

The objective is a choice: MAP@5 (Humpback: where to place new_whale), GAP (Landmark: which
answers to withhold), a target false-accept rate (a catalogue that must rarely name a stranger as a
known identity), or AnimalCLEF's balanced open-set score (known identities named right and new ones
answered new, equally weighted: answering new for everything scores 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from kenning.decision.review import ReviewBand, review_band
from kenning.decision.voting import RankedLabels, place_unknown
from kenning.errors import KenningError, warn
from kenning.metrics.answers import answer_metrics

OBJECTIVES = ("map@5", "gap", "far", "balanced")


@dataclass
class SweepPoint:
    threshold: float
    map5: float
    gap: float | None  # None only in indexes calibrated before GAP was swept
    far: float | None  # unknown queries answered with a known label first
    known_accuracy: float | None
    balanced: float | None = None  # None in indexes calibrated before it was measured, or without new queries


@dataclass
class Spread:
    """Thresholds chosen on bootstrap draws of the held-out identities, and the share of held-out
    queries whose best score lies between their 10th and 90th percentile: the answers that depend on
    which identities happened to be held out (wide: a rough threshold)."""

    thresholds: list[float]
    seed: int
    uncertain_share: float

    @property
    def low_high(self) -> tuple[float, float] | None:
        if not self.thresholds:
            return None
        low, high = np.quantile(self.thresholds, [0.1, 0.9])
        return float(low), float(high)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Calibration:
    threshold: float
    objective: str
    target_far: float | None
    chosen: SweepPoint
    curve: list[SweepPoint]
    queries: int
    unknown_queries: int
    spread: Spread | None = None  # None: not resampled (an index calibrated before spreads were measured)
    review: ReviewBand | None = None  # None: one threshold decides every answer
    bagged: bool = False  # the median of the bootstrap draws' choices, not the best on all held-out queries

    def to_dict(self) -> dict:
        """What the index manifest stores (JSON)."""
        return {
            "objective": self.objective,
            "target_far": self.target_far,
            "map@5": self.chosen.map5,
            "gap": self.chosen.gap,
            "far": self.chosen.far,
            "balanced": self.chosen.balanced,
            "queries": self.queries,
            "unknown_queries": self.unknown_queries,
            "curve": [asdict(p) for p in self.curve],
            "spread": self.spread.to_dict() if self.spread else None,
            "review": self.review.to_dict() if self.review else None,
            "bagged": self.bagged,
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
            chosen = SweepPoint(
                threshold,
                float(data["map@5"]),
                float(data["gap"]),
                _optional(data["far"]),
                None,
                _optional(data.get("balanced")),
            )
            return cls(
                threshold,
                str(data["objective"]),
                _optional(data["target_far"]),
                chosen,
                curve,
                int(data["queries"]),
                int(data["unknown_queries"]),
                Spread(**data["spread"]) if data.get("spread") else None,
                ReviewBand(**data["review"]) if data.get("review") else None,
                bool(data.get("bagged", False)),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise KenningError("the index's threshold calibration is damaged: rebuild the index") from None

    def describe(self) -> str:
        """One line for people: how the threshold was chosen and what it scored."""
        if self.chosen.gap is None:
            return f"calibrated for map@5 on {self.queries} held-out queries: MAP@5 {self.chosen.map5:.4f}"
        goal = f"false-accept rate <= {self.target_far:.3f}" if self.objective == "far" else self.objective
        far = "-" if self.chosen.far is None else f"{self.chosen.far:.3f}"
        balanced = "" if self.chosen.balanced is None else f", balanced {self.chosen.balanced:.3f}"
        draws = len(self.spread.thresholds) if self.spread else 0
        how = f" (bagged: the median of {draws} bootstrap draws' choices)" if self.bagged else ""
        return (
            f"calibrated for {goal}{how} on {self.queries} held-out queries, {self.unknown_queries} of them new: "
            f"MAP@5 {self.chosen.map5:.4f}, GAP {self.chosen.gap:.4f}, false-accept rate {far}{balanced}"
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
    identities: Sequence[str] | None = None,
) -> list[SweepPoint]:
    """MAP@5, GAP, false-accept rate, known accuracy and the balanced open-set score of the answers
    at each threshold (`identities`: each query's true identity, see answer_metrics).

    GAP takes the first answer with its confidence and no prediction when it is unknown; queries
    whose truth is the unknown label are the non-landmarks."""
    truth = np.asarray(actual, dtype=object)
    known = truth != unknown_label
    ids = list(query_ids) if query_ids is not None else [f"{i:012d}" for i in range(len(truth))]
    points = []
    for t in thresholds:
        answers = [place_unknown(r, float(t), unknown_label) for r in ranked]
        m = answer_metrics(truth, known, answers, ids, unknown_label, float(t), identities)
        far, known_accuracy = m["false_accept_rate"], m["known_accuracy"]
        points.append(SweepPoint(float(t), m["map@5"], m["gap"], far, known_accuracy, m["balanced"]))
    return points


def calibrate_threshold(
    ranked: Sequence[RankedLabels],
    actual: Sequence[str],
    unknown_label: str,
    objective: str = "map@5",
    target_far: float = 0.05,
    steps: int = 101,
    identities: Sequence[str] | None = None,
    resamples: int = 0,
    seed: int = 0,
    review: tuple[float, float] | None = None,
    bagged: bool = False,
) -> Calibration:
    """Sweep thresholds over the observed best similarities and keep the best by `objective`.

    map@5 / gap / balanced: of a plateau of equally good thresholds the middle one, the choice least
    sensitive to the held-out sample. far: the lowest threshold whose false-accept rate is at most
    `target_far` (it accepts the most known queries within the budget). `identities`: each query's
    true identity (balanced averages per identity; resampling draws identities). `resamples`: that
    many bootstrap draws of the identities, each choosing its own threshold: the spread. `review`:
    (review_far, review_miss) of a review band around the threshold (decision/review.py). `bagged`:
    the threshold is the median of the draws' choices instead (bagging: the best of one small sample
    sits on its noise), its figures measured on all the held-out queries.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"calibration objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    if bagged and not resamples:
        raise KenningError("a bagged threshold needs bootstrap draws of the held-out identities (resamples > 0)")
    best = np.array([r.best_similarity for r in ranked])
    grid = threshold_grid(best, steps)
    spread = None
    if resamples:
        groups = list(identities) if identities is not None else list(actual)
        spread = threshold_spread(ranked, actual, groups, unknown_label, objective, target_far, resamples, seed)
    median = float(np.median(spread.thresholds)) if bagged and spread and spread.thresholds else None
    if bagged and median is None:
        warn("no bootstrap draw of the held-out identities could choose a threshold: the best of all is kept")
    if median is not None:
        grid = np.unique(np.append(grid, median))
    curve = sweep(ranked, actual, unknown_label, grid, identities=identities)
    i = _choose(curve, objective, target_far) if median is None else int(np.flatnonzero(grid == median)[0])
    band = None if review is None else review_band(ranked, actual, unknown_label, curve[i].threshold, *review)
    return Calibration(
        threshold=curve[i].threshold,
        objective=objective,
        target_far=target_far if objective == "far" else None,
        chosen=curve[i],
        curve=curve,
        queries=len(ranked),
        unknown_queries=sum(a == unknown_label for a in actual),
        spread=spread,
        review=band,
        bagged=median is not None,
    )


def _choose(curve: list[SweepPoint], objective: str, target_far: float) -> int:
    if objective == "far":
        within = [i for i, p in enumerate(curve) if p.far is None or p.far <= target_far]
        return within[0] if within else len(curve) - 1
    key = {"map@5": "map5", "gap": "gap", "balanced": "balanced"}[objective]
    scores = np.array([np.nan if getattr(p, key) is None else getattr(p, key) for p in curve], np.float64)
    if np.isnan(scores).all():
        raise KenningError(f"cannot calibrate for {objective}: the held-out queries need known and new ones")
    best = np.flatnonzero(scores == np.nanmax(scores))
    return int(best[len(best) // 2])


def threshold_spread(
    ranked: Sequence[RankedLabels],
    actual: Sequence[str],
    identities: Sequence[str],
    unknown_label: str,
    objective: str,
    target_far: float,
    resamples: int,
    seed: int,
    steps: int = 41,
) -> Spread:
    """The thresholds `resamples` bootstrap draws of the identities (with their queries) choose: how
    much the choice depends on which held-out identities there happened to be. Reproducible by seed."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(identities, dtype=object)
    names = np.unique(groups)
    rows = {name: np.flatnonzero(groups == name) for name in names}
    best = np.array([r.best_similarity for r in ranked])
    chosen = []
    for _ in range(resamples):
        drawn = rng.choice(len(names), len(names), replace=True)
        take = np.concatenate([rows[names[j]] for j in drawn])
        # an identity drawn twice counts as two identities, as the bootstrap means
        draw_groups = np.concatenate([[f"{k}"] * len(rows[names[j]]) for k, j in enumerate(drawn)])
        truth = [actual[t] for t in take]
        if truth.count(unknown_label) in (0, len(truth)):
            continue  # a draw without new (or without known) queries cannot choose
        ids = [f"{n:012d}" for n in range(len(take))]
        curve = sweep(
            [ranked[t] for t in take], truth, unknown_label, threshold_grid(best[take], steps), ids, draw_groups
        )
        chosen.append(curve[_choose(curve, objective, target_far)].threshold)
    if not chosen:
        return Spread([], seed, 1.0)
    low, high = Spread([float(v) for v in chosen], seed, 1.0).low_high
    return Spread([float(v) for v in chosen], seed, float(((best >= low) & (best < high)).mean()))


def new_rate_threshold(ranked: Sequence[RankedLabels], rate: float) -> float:
    """The threshold of one batch under which a share `rate` of its queries is answered new (the
    Happywhale winners' rule: the share of new individuals is expected, the scores are not): the
    score of its round(rate * n)-th weakest best match."""
    if not 0.0 <= rate <= 1.0:
        raise KenningError(f"the share of new queries must be between 0 and 1, not {rate}")
    best = np.sort([r.best_similarity for r in ranked])
    new = round(rate * len(best))
    if len(best) == 0 or new == 0:
        return float(best[0]) if len(best) else 0.0
    return float(best[new]) if new < len(best) else float(np.nextafter(best[-1], np.inf))
