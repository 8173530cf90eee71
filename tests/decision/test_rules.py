"""The answer rules: typed, ranked through `rank()`, stored as their `to_dict` and read back the same."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kenning.decision.fusion import fit_fusion
from kenning.decision.rules import Fused, Votes
from kenning.decision.threshold import calibrate_threshold
from kenning.decision.voting import Neighbours, rank_labels
from kenning.errors import KenningError
from tests.decision.test_fusion import _pairs


def _stored(data: dict) -> dict:
    return json.loads(json.dumps(data))  # what a manifest file holds


def test_votes_rank_the_k_nearest_and_round_trip_with_their_calibration() -> None:
    neighbours = Neighbours(
        np.array([[0.9, 0.8, 0.7], [0.4, 0.3, -np.inf]]), np.array([["a", "b", "b"], ["c", "d", ""]])
    )
    votes = Votes(k=2, power=1.0)
    ranked = votes.rank(neighbours)
    assert ranked[0].labels == rank_labels(np.array([0.9, 0.8]), np.array(["a", "b"]), 1.0).labels  # k=2: 3rd unseen
    calibration = calibrate_threshold(ranked * 3, ["a", "unknown"] * 3, "unknown")
    calibrated = Votes(2, 1.0, calibration.threshold, calibration)
    again = Votes.from_dict(_stored(calibrated.to_dict()))
    assert again.threshold == calibrated.threshold and again.calibration.curve == calibration.curve
    assert set(calibrated.to_dict()) == {"k", "power", "threshold", "calibration", "normalise"}  # manifest keys


def test_fused_ranks_candidates_and_round_trips() -> None:
    candidates, actual = _pairs()
    fused = Fused(fit_fusion(candidates, actual), threshold=0.4)
    again = Fused.from_dict(_stored(fused.to_dict()), verify=False)
    assert again is not None and again.threshold == 0.4 and again.calibration is None
    assert [r.labels for r in again.rank(None, candidates)] == [r.labels for r in fused.rank(None, candidates)]
    assert Fused.from_dict({}, verify=False) is None  # an index without local matching
    with pytest.raises(KenningError, match=r"local\.verify"):
        Fused.from_dict(_stored(fused.to_dict()), verify=True)  # inliers expected, none calibrated
    with pytest.raises(KenningError, match="candidate identities"):
        fused.rank(None, None)


def test_both_rules_say_what_their_threshold_is_set_on() -> None:
    assert Votes(5, 3.0).score == "similarity" and Fused(fit_fusion(*_pairs())).score == "fused probability"
