"""One answer for an encounter: several photos of one animal at one place and time, perhaps of
both flanks, answered together (Wildbook's "one match over all images of an encounter").

The rule, per identity: within each viewpoint its best photo (photos of one flank repeat the same
evidence, so they do not add up); across viewpoints the mean of those bests, an identity no photo
of a viewpoint found counting 0 there (two flanks that both point at it add up, one that misses it
halves it). That mean ranks the identities and is their confidence. What the unknown threshold is
held to stays on the photos' own scale: an identity's best single-photo score, so a threshold
calibrated on photos keeps its meaning for encounters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kenning.decision.voting import RankedLabels


def encounter_rows(encounters: Sequence[str]) -> dict[str, list[int]]:
    """The positions of each encounter's photos, encounters in the order they first appear; a photo
    whose encounter is "" belongs to none."""
    groups: dict[str, list[int]] = {}
    for row, name in enumerate(encounters):
        if name:
            groups.setdefault(name, []).append(row)
    return groups


def combine(ranked: Sequence[RankedLabels], views: Sequence[str]) -> RankedLabels:
    """The encounter's ranked labels from its photos' (`views[i]`: photo i's viewpoint, "" unknown)."""
    groups = sorted(set(views))
    best_confidence: dict[str, dict[str, float]] = {}  # label -> viewpoint -> best confidence
    best_score: dict[str, float] = {}  # label -> best single-photo score (the threshold's scale)
    for photo, view in zip(ranked, views, strict=True):
        for label, confidence, score in zip(photo.labels, photo.confidences, photo.match_scores, strict=True):
            per_view = best_confidence.setdefault(label, {})
            per_view[view] = max(per_view.get(view, -np.inf), confidence)
            best_score[label] = max(best_score.get(label, -np.inf), score)
    labels = list(best_confidence)
    mean = np.array([sum(best_confidence[lab].values()) / len(groups) for lab in labels])
    best = np.array([best_score[lab] for lab in labels])
    order = np.lexsort((np.array(labels, dtype=object), -best, -mean))  # then the closer match, then the name
    return RankedLabels([labels[i] for i in order], [float(mean[i]) for i in order], [float(best[i]) for i in order])
