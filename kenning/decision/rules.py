"""The answer rules: how a query's neighbours (and, with local matching, its candidate identities)
become ranked labels, and below which score the answer is unknown.

One typed object per rule, each with `rank()`, its threshold and the calibration that chose it,
and `to_dict` / `from_dict`: the index manifest stores what `to_dict` returns, build-time
calibration makes the rules (build.py), the recognizer answers with one. A new rule is one class
here with the members of `Rule`, chosen where the recognizer picks its rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kenning.decision.fusion import INLIERS, MATCHES, Candidates, Fusion, rank_fused
from kenning.decision.normalise import CohortNorm, norm_from_dict
from kenning.decision.threshold import Calibration
from kenning.decision.voting import Neighbours, RankedLabels, rank_labels
from kenning.errors import KenningError


class Rule(Protocol):
    threshold: float | None  # None: never answers unknown
    calibration: Calibration | None  # None: the threshold was set by hand (or there is none)
    norm: CohortNorm | None  # None: the threshold is on raw scores

    @property
    def score(self) -> str: ...  # what the threshold is set on, for people

    def rank(self, neighbours: Neighbours, candidates: Sequence[Candidates] | None) -> list[RankedLabels]: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class Votes:
    """Similarity-weighted votes of the k nearest gallery images (voting.py); unknown below the
    nearest neighbour's similarity."""

    k: int
    power: float
    threshold: float | None = None
    calibration: Calibration | None = None
    norm: CohortNorm | None = None  # the cohort: each label's nearest similarity among all neighbours searched

    @property
    def score(self) -> str:
        return "similarity" if self.norm is None else "normalised similarity"

    def rank(self, neighbours: Neighbours, candidates: Sequence[Candidates] | None = None) -> list[RankedLabels]:
        k = self.k
        rows = zip(neighbours.similarities, neighbours.labels, strict=True)
        ranked = [rank_labels(sims[:k], labels[:k], self.power) for sims, labels in rows]
        if self.norm is None:
            return ranked
        for r, sims, labels in zip(ranked, neighbours.similarities, neighbours.labels, strict=True):
            mean, spread = self.norm.cohort(_nearest_per_label(sims, labels))
            r.match_scores = [(s - mean) / spread for s in r.match_scores]
        return ranked

    def to_dict(self) -> dict[str, Any]:
        """The index manifest's own keys (k, power, threshold, calibration, normalise)."""
        calibration = self.calibration.to_dict() if self.calibration else {}
        normalise = self.norm.to_dict() if self.norm else None
        return {
            "k": self.k,
            "power": self.power,
            "threshold": self.threshold,
            "calibration": calibration,
            "normalise": normalise,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Votes:
        threshold = data["threshold"]
        calibration = Calibration.from_dict(data["calibration"], threshold)
        return cls(data["k"], data["power"], threshold, calibration, norm_from_dict(data.get("normalise")))


def _nearest_per_label(similarities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each label's nearest similarity in one query's row of neighbours (the row is best first)."""
    found = np.isfinite(similarities)
    _, first = np.unique(labels[found], return_index=True)
    return similarities[found][first]


@dataclass
class Fused:
    """The fused probability of the two stages (fusion.py) ranks the candidate identities; unknown
    below a probability."""

    fusion: Fusion
    threshold: float | None = None
    calibration: Calibration | None = None
    norm: CohortNorm | None = None  # the cohort: the fused probabilities of the query's other candidates

    @property
    def score(self) -> str:
        return "fused probability" if self.norm is None else "normalised fused probability"

    def rank(self, neighbours: Neighbours, candidates: Sequence[Candidates] | None) -> list[RankedLabels]:
        if candidates is None:
            raise KenningError("the fused answer needs each query's candidate identities from local matching")
        ranked = [rank_fused(c, self.fusion) for c in candidates]
        if self.norm is not None:
            for r in ranked:  # confidences stay probabilities; the threshold's scale is normalised
                r.match_scores = [float(v) for v in self.norm(np.asarray(r.match_scores))]
        return ranked

    def to_dict(self) -> dict[str, Any]:
        """The index manifest's `fusion`: the calibrators, what they were fitted on, the threshold and
        the normalisation it is set after."""
        calibration = self.calibration.to_dict() if self.calibration else {}
        normalise = self.norm.to_dict() if self.norm else None
        rule = {"threshold": self.threshold, "calibration": calibration, "normalise": normalise}
        return {**self.fusion.to_dict(), **rule}

    @classmethod
    def from_dict(cls, data: dict[str, Any], verify: bool, glue: bool = False) -> Fused | None:
        """None when there is no fusion; its parts must be those the local settings produce
        (`verify`: spatial verification adds the inlier count; `glue`: the learned matcher's part)."""
        if not data.get("calibrators"):
            return None
        fusion = Fusion.from_dict(data)
        for part, setting, on in ((INLIERS, "local.verify", verify), (MATCHES, "local.glue", glue)):
            if (part in fusion.calibrators) != on:
                raise KenningError(f"the index's fusion does not match its {setting} setting: rebuild the index")
        threshold = data.get("threshold")
        calibration = Calibration.from_dict(data.get("calibration", {}), threshold)
        return cls(fusion, threshold, calibration, norm_from_dict(data.get("normalise")))
