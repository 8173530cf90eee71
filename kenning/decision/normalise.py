"""Score normalisation before the unknown threshold: each query's scores against its own impostors.

A raw score does not carry from one gallery to another: a photo taken where the gallery's photos
were taken (same ground, light, camera) is close to all of them, so its best match scores high
whether or not the animal is there, and a threshold fitted on the held-out identities, which look
like none of the gallery, lets such strangers through. Speaker and face verification meet this with
cohort normalisation (Z-norm, adaptive S-norm): a score is measured against the scores the same
probe gets from identities it is not. Here each query's cohort is its own candidates ranked after
the first `skip` (the match itself and its look-alikes), up to `size` of them; the score becomes
(score - cohort mean) / cohort spread. Within a query that is an increasing affine map, so the
ranking of its answers is unchanged; only where the unknown answer falls moves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kenning.errors import KenningError

METHODS = ("none", "cohort")
MIN_COHORT = 3  # fewer impostor scores than this say nothing about a spread: the score is only centred
MIN_SPREAD = 1e-3  # floor of the cohort's spread: a flat cohort (all impostors alike) must not blow a score up


@dataclass(frozen=True)
class CohortNorm:
    """Z-normalisation of one query's scores by its own impostor cohort (see the module)."""

    skip: int = 1  # best candidates left out of the cohort
    size: int = 20  # candidates after them whose scores are the impostor distribution

    def __post_init__(self) -> None:
        if self.skip < 0 or self.size < 1:
            raise KenningError(f"score normalisation needs skip >= 0 and size >= 1, not {self.skip} and {self.size}")

    def cohort(self, scores: np.ndarray) -> tuple[float, float]:
        """(mean, spread) of the query's impostor scores; with too small a cohort, (its mean, 1): a shift only.
        No cohort at all (one candidate): (0, 1), the score as it is."""
        ranked = np.sort(np.asarray(scores, np.float64)[np.isfinite(scores)])[::-1]
        cohort = ranked[self.skip : self.skip + self.size]
        if len(cohort) == 0:
            return 0.0, 1.0
        if len(cohort) < MIN_COHORT:
            return float(cohort.mean()), 1.0
        return float(cohort.mean()), max(float(cohort.std()), MIN_SPREAD)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """The query's scores, normalised by its own cohort: an increasing map, ranking kept."""
        mean, spread = self.cohort(scores)
        return (np.asarray(scores, np.float64) - mean) / spread

    def to_dict(self) -> dict[str, Any]:
        return {"method": "cohort", **asdict(self)}


def create_norm(method: str, skip: int, size: int) -> CohortNorm | None:
    """The normalisation a config names (index.normalise, cohort_skip, cohort_size); None for none."""
    if method not in METHODS:
        raise KenningError(f"score normalisation must be one of {', '.join(METHODS)}, not {method!r}")
    return CohortNorm(skip, size) if method == "cohort" else None


def stored_norm(method: str, skip: int, size: int) -> dict[str, Any] | None:
    """What an index manifest stores for the normalisation a config names."""
    norm = create_norm(method, skip, size)
    return norm.to_dict() if norm else None


def norm_from_dict(data: dict[str, Any] | None) -> CohortNorm | None:
    """What `to_dict` stored; None (or method none): raw scores, as indexes built before it."""
    if not data or data.get("method", "none") == "none":
        return None
    if data.get("method") != "cohort":
        raise KenningError(f"unknown score normalisation {data.get('method')!r} in the index: rebuild it")
    try:
        return CohortNorm(int(data["skip"]), int(data["size"]))
    except (KeyError, TypeError, ValueError):
        raise KenningError("the index's score normalisation is damaged: rebuild the index") from None
