"""A batch's photos grouped by matching each other, where nobody recorded an encounter.

A batch of queries (a day's survey, a camera trap's night) often holds several photos of one animal.
Each photo's best local match among the batch's *other* photos links the two when its score reaches
the link threshold; linked photos form a group, and every photo of a group gets the group's answer,
as an encounter's photos do (decision/encounters.py). One rule outranks the gain: a join is refused
when it would put two photos that each name a different known identity with confidence (their own
answers, at the unknown threshold) into one group, so grouping never overrules a sure answer with
another sure answer. The link threshold and the grouped answers' unknown threshold are chosen on the
held-out identities (grouping_calibration.py) and stored with the index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kenning.decision.encounters import combine
from kenning.decision.voting import RankedLabels
from kenning.errors import KenningError


@dataclass(frozen=True)
class Grouping:
    """How an index groups a batch: the link threshold, the grouped answers' unknown threshold, and
    what the held-out identities measured with them."""

    link: float | None  # a photo's best match among the batch's other photos joins them at or above this
    # score; None: the held-out identities were answered best photo by photo, nothing is joined
    threshold: float | None  # the unknown threshold grouped answers are held to; None: never unknown
    quantile: float  # the share of held-out queries whose best link falls below `link` (1.0: link is None)
    objective: str  # what the held-out identities chose both thresholds by
    held_out: dict[str, float] = field(default_factory=dict)  # grouped figures there: balanced, far, groups, ...

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Grouping | None:
        """The stored grouping ({}: none), checked: a damaged one is refused in one line."""
        if not stored:
            return None
        try:
            grouping = cls(**stored)
        except TypeError as exc:
            raise KenningError(f"the stored batch grouping is damaged: {exc}") from None
        numbers = [grouping.quantile, *(v for v in (grouping.link, grouping.threshold) if v is not None)]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
            raise KenningError("the stored batch grouping is damaged: its thresholds are not finite numbers")
        return grouping


def sure_labels(ranked: Sequence[RankedLabels], threshold: float | None) -> list[str | None]:
    """The identity each photo names at `threshold` on its own (its first label scored at or above
    it, as decision/voting.place_unknown answers), None where it answers unknown first."""
    if threshold is None:
        return [r.labels[0] if r.labels else None for r in ranked]
    return [
        next((lab for lab, s in zip(r.labels, r.match_scores, strict=True) if s >= threshold), None) for r in ranked
    ]


def link_groups(partner: np.ndarray, score: np.ndarray, link: float | None, sure: Sequence[str | None]) -> np.ndarray:
    """Each photo's group number (0, 1, ... in order of first photo): photo i is joined to
    `partner[i]` when `score[i]` reaches `link` (None: never) and is positive, strongest links
    first, unless the join would put two different identities of `sure` into one group."""
    # Union-find by hand: scipy's connected_components joins every edge, it cannot refuse a join.
    parent = list(range(len(score)))
    named = list(sure)  # per group root: the one identity its photos name with confidence, or None

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in np.argsort(-np.asarray(score), kind="stable"):
        if link is None or score[i] < link or score[i] <= 0:  # a link needs some local evidence
            break
        a, b = root(int(i)), root(int(partner[i]))
        if a == b or (named[a] is not None and named[b] is not None and named[a] != named[b]):
            continue
        parent[b] = a
        named[a] = named[a] if named[a] is not None else named[b]
    return pd.factorize(np.array([root(i) for i in range(len(parent))]))[0]


def grouped(ranked: Sequence[RankedLabels], views: Sequence[str], groups: np.ndarray) -> list[RankedLabels]:
    """Every photo's ranked labels as its group's (decision/encounters.combine over the group's photos)."""
    members = pd.Series(np.arange(len(ranked))).groupby(np.asarray(groups)).agg(list)
    answer = {g: combine([ranked[i] for i in rows], [views[i] for i in rows]) for g, rows in members.items()}
    return [answer[g] for g in groups]
