"""The review band: sure-match and sure-new thresholds chosen on held-out queries."""

from __future__ import annotations

import numpy as np

from kenning.decision.review import MATCH, NEW, REVIEW, ReviewBand, decision, review_band
from kenning.decision.threshold import Calibration, calibrate_threshold
from kenning.decision.voting import rank_labels


def _held_out(seed: int) -> tuple[list, list[str]]:
    rng = np.random.default_rng(seed)
    ranked, actual = [], []
    for i in range(120):
        new = i % 3 == 0
        best = rng.uniform(0.2, 0.7) if new else rng.uniform(0.4, 0.95)
        first = "z" if new or i % 4 == 0 else f"id{i}"  # some known queries are named wrong
        ranked.append(rank_labels(np.array([best, 0.1]), np.array([first, "y"]), 3.0))
        actual.append("unknown" if new else f"id{i}")
    return ranked, actual


def test_the_band_holds_the_threshold_and_its_promises() -> None:
    ranked, actual = _held_out(0)
    threshold = 0.6
    band = review_band(ranked, actual, "unknown", threshold, review_far=0.05, review_miss=0.1)
    assert band.sure_new <= threshold <= band.sure_match
    best = np.array([r.best_similarity for r in ranked])
    new = np.array(actual) == "unknown"
    right = np.array([r.labels[0] == a for r, a in zip(ranked, actual, strict=True)])
    assert (best[new] >= band.sure_match).mean() <= 0.05  # few strangers are named surely
    assert (best[right] < band.sure_new).mean() <= 0.1  # few right answers are declared new
    for b in best:  # nothing above sure-match or below sure-new is left for review
        expected = MATCH if b >= band.sure_match else NEW if b < band.sure_new else REVIEW
        assert band.decide(b) == expected


def test_without_a_band_the_threshold_decides() -> None:
    assert decision(0.5, 0.4, None) == MATCH and decision(0.3, 0.4, None) == NEW
    assert decision(0.3, None, None) == MATCH  # no threshold: unknown is never answered
    assert decision(0.5, 0.4, ReviewBand(0.3, 0.6)) == REVIEW


def test_calibration_stores_the_band() -> None:
    ranked, actual = _held_out(1)
    cal = calibrate_threshold(ranked, actual, "unknown", "balanced", review=(0.02, 0.05))
    again = Calibration.from_dict(cal.to_dict(), cal.threshold)
    assert again is not None and again.review == cal.review
    assert cal.review.sure_new <= cal.threshold <= cal.review.sure_match
