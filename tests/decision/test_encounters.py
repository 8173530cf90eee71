"""One answer per encounter: per viewpoint each identity's best photo, the mean across viewpoints."""

from __future__ import annotations

import pytest

from kenning.decision.encounters import combine
from kenning.decision.voting import RankedLabels, place_unknown


def _photo(scores: dict[str, float]) -> RankedLabels:
    labels = sorted(scores, key=lambda lab: -scores[lab])
    return RankedLabels(labels, [scores[lab] for lab in labels], [scores[lab] for lab in labels])


def test_both_flanks_add_up_and_one_flank_repeats_nothing() -> None:
    left, right = _photo({"a": 0.6, "b": 0.7}), _photo({"a": 0.5, "c": 0.2})
    left_again = _photo({"b": 0.9})
    answer = combine([left, right, left_again], ["left", "right", "left"])
    # a: (0.6 + 0.5) / 2 = 0.55; b: (max(0.7, 0.9) + 0) / 2 = 0.45; c: (0 + 0.2) / 2 = 0.1
    assert answer.labels == ["a", "b", "c"]
    assert answer.confidences == pytest.approx([0.55, 0.45, 0.1])
    assert answer.match_scores == pytest.approx([0.6, 0.9, 0.2])  # the best photo: the threshold's scale


def test_one_photo_is_answered_as_itself() -> None:
    photo = _photo({"a": 0.8, "b": 0.3})
    assert combine([photo], ["left"]).labels == photo.labels
    assert combine([photo], [""]).confidences == pytest.approx(photo.confidences)


def test_the_threshold_holds_the_best_photo() -> None:
    answer = combine([_photo({"a": 0.4}), _photo({"a": 0.2})], ["left", "right"])
    assert place_unknown(answer, 0.35, "new").labels == ["a", "new"]  # 0.4 >= 0.35 though the mean is 0.3
    assert place_unknown(answer, 0.45, "new").labels == ["new", "a"]
