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
from typing import Any, ClassVar, Protocol

from kenning.decision.fusion import INLIERS, Candidates, Fusion, rank_fused
from kenning.decision.threshold import Calibration
from kenning.decision.voting import Neighbours, RankedLabels, rank_labels
from kenning.errors import KenningError


class Rule(Protocol):
    score: ClassVar[str]  # what the threshold is set on, for people
    threshold: float | None  # None: never answers unknown
    calibration: Calibration | None  # None: the threshold was set by hand (or there is none)

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
    score: ClassVar[str] = "similarity"

    def rank(self, neighbours: Neighbours, candidates: Sequence[Candidates] | None = None) -> list[RankedLabels]:
        k = self.k
        rows = zip(neighbours.similarities, neighbours.labels, strict=True)
        return [rank_labels(sims[:k], labels[:k], self.power) for sims, labels in rows]

    def to_dict(self) -> dict[str, Any]:
        """The index manifest's own keys (k, power, threshold, calibration)."""
        calibration = self.calibration.to_dict() if self.calibration else {}
        return {"k": self.k, "power": self.power, "threshold": self.threshold, "calibration": calibration}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Votes:
        threshold = data["threshold"]
        return cls(data["k"], data["power"], threshold, Calibration.from_dict(data["calibration"], threshold))


@dataclass
class Fused:
    """The fused probability of the two stages (fusion.py) ranks the candidate identities; unknown
    below a probability."""

    fusion: Fusion
    threshold: float | None = None
    calibration: Calibration | None = None
    score: ClassVar[str] = "fused probability"

    def rank(self, neighbours: Neighbours, candidates: Sequence[Candidates] | None) -> list[RankedLabels]:
        if candidates is None:
            raise KenningError("the fused answer needs each query's candidate identities from local matching")
        return [rank_fused(c, self.fusion) for c in candidates]

    def to_dict(self) -> dict[str, Any]:
        """The index manifest's `fusion`: the calibrators, what they were fitted on, the threshold."""
        calibration = self.calibration.to_dict() if self.calibration else {}
        return {**self.fusion.to_dict(), "threshold": self.threshold, "calibration": calibration}

    @classmethod
    def from_dict(cls, data: dict[str, Any], verify: bool) -> Fused | None:
        """None when there is no fusion; its parts must be those the local settings produce
        (`verify`: spatial verification adds the inlier count)."""
        if not data.get("calibrators"):
            return None
        fusion = Fusion.from_dict(data)
        if (INLIERS in fusion.calibrators) != verify:
            raise KenningError("the index's fusion does not match its local.verify setting: rebuild the index")
        threshold = data.get("threshold")
        return cls(fusion, threshold, Calibration.from_dict(data.get("calibration", {}), threshold))
