"""A review band: two thresholds instead of one, and the answers between them left to a person.

One threshold must decide every photo, so where matching is weak it either names strangers or names
no one. Catalogues that people curate (Wildbook's review queue) would rather see the doubtful cases:
above `sure_match` the best match is named (a stranger scores that high rarely: at most `review_far`
of the held-out new queries did), below `sure_new` the photo is new (at most `review_miss` of the
held-out known queries answered right scored that low), between them the answer is flagged
`review` and ranked as usual, with its candidates for a person to decide. Both are chosen on the
held-out identities with the threshold, which always lies between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kenning.decision.voting import RankedLabels

MATCH, REVIEW, NEW = "match", "review", "new"


@dataclass(frozen=True)
class ReviewBand:
    sure_new: float  # below: new
    sure_match: float  # at or above: named

    def decide(self, best: float) -> str:
        """match, review or new for a query whose best match scores `best`."""
        if best >= self.sure_match:
            return MATCH
        return NEW if best < self.sure_new else REVIEW

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decision(best: float, threshold: float | None, band: ReviewBand | None) -> str:
    """The answer's decision: by the band where there is one, else match at or above the threshold."""
    if band is not None:
        return band.decide(best)
    return MATCH if threshold is None or best >= threshold else NEW


def review_band(
    ranked: Sequence[RankedLabels],
    actual: Sequence[str],
    unknown_label: str,
    threshold: float,
    review_far: float,
    review_miss: float,
) -> ReviewBand:
    """sure_match: the lowest score at which at most `review_far` of the new queries are named;
    sure_new: the score below which at most `review_miss` of the known queries named right fall.
    Widened to contain `threshold`."""
    best = np.array([r.best_similarity for r in ranked], np.float64)
    truth = np.asarray(actual, dtype=object)
    new = truth == unknown_label
    right = np.array([bool(r.labels) and r.labels[0] == a for r, a in zip(ranked, truth, strict=True)]) & ~new
    sure_match, sure_new = threshold, threshold
    if new.any():  # just above the new queries' (1 - review_far) quantile: at most that share scores as high
        strangers = float(np.quantile(best[new], 1.0 - review_far, method="higher"))
        sure_match = max(threshold, float(np.nextafter(strangers, np.inf)))
    if right.any():
        sure_new = min(threshold, float(np.quantile(best[right], review_miss, method="lower")))
    return ReviewBand(sure_new, sure_match)
