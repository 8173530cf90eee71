"""Fusion calibrated on the gallery itself: for closed-set catalogues (products, landmarks) whose
model was trained on the very identities it indexes, so no identity lies outside the gallery.

Each sampled gallery image queries the index with itself left out (leave-one-out, as protocol A
leaves out a query's own sighting); its identity is the right answer where the gallery has another
image of it, else nothing is (every candidate a different identity). The calibrators are fitted on
those pairs as on held-out ones. What this cannot give is an unknown threshold: no query is of a
new identity, so none is set (unknown is never answered) unless one is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from kenning.decision.fusion import MIN_POSITIVES, Fusion, fit_fusion
from kenning.errors import KenningError
from kenning.local.featureset import LocalFeatures
from kenning.recognizer import Recognizer

SAMPLE = 300  # gallery images that query the rest: enough pairs for the isotonic calibrators, bounded cost


def check_calibrates_within(labels: pd.Series) -> None:
    """Refused in one line, before any image is read, when too few gallery images have another of
    their identity beside them to calibrate on."""
    counts = labels.value_counts()
    paired = int(counts[counts > 1].sum())
    if paired < MIN_POSITIVES:
        raise KenningError(
            "local matching needs held-out identities outside the gallery (train with train.holdout_fraction > 0) "
            f"or identities with several photos in it to calibrate on; {paired} gallery photos have another of their "
            f"identity, and it needs at least {MIN_POSITIVES}; or build with --local none"
        )


def calibrate_within_gallery(
    recognizer: Recognizer,
    vectors: np.ndarray,
    local: Sequence[LocalFeatures],
    ids: np.ndarray,
    labels: Sequence[str],
    seed: int = 0,
) -> Fusion:
    """The fusion of the stages fitted on leave-one-out queries of the gallery (`ids`: each image's
    gallery id; `labels`: its identity). Refused (fit_fusion) when too few pairs are the same identity."""
    labels = np.asarray(labels, dtype=object)
    rows = np.sort(np.random.default_rng(seed).permutation(len(labels))[:SAMPLE])
    names, counts = np.unique(labels, return_counts=True)
    has_another = dict(zip(names, counts > 1, strict=True))
    actual = [labels[r] if has_another[labels[r]] else recognizer.unknown_label for r in rows]
    matches = recognizer.match(vectors[rows], [local[r] for r in rows], exclude=ids[rows])
    if matches.candidates is None:
        raise KenningError("calibrating the fusion on the gallery needs an index with local matching")
    return fit_fusion(
        matches.candidates,
        actual,
        queries=len(rows),
        model=recognizer.model_manifest.fingerprint,
        on="the gallery itself, leave-one-out (no held-out identities outside it)",
    )
