"""Cohort normalisation: per query an increasing map (ranking kept), stored with the rule, and what
it does to a query whose every score is inflated (a scene shared with the gallery)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kenning.decision.fusion import fit_fusion
from kenning.decision.normalise import CohortNorm, create_norm, norm_from_dict
from kenning.decision.rules import Fused, Votes
from kenning.decision.voting import Neighbours
from kenning.errors import KenningError
from tests.decision.test_fusion import _pairs


def _neighbours(rng: np.random.Generator, n: int, width: int, labels: int) -> Neighbours:
    sims = np.sort(rng.uniform(-0.2, 0.9, (n, width)), axis=1)[:, ::-1]
    names = rng.integers(0, labels, (n, width)).astype(str).astype(object)
    return Neighbours(sims, names)


def test_normalisation_is_monotone_within_a_query_and_keeps_its_ranking() -> None:
    rng = np.random.default_rng(0)
    neighbours = _neighbours(rng, 40, 60, 25)
    raw = Votes(k=10, power=3.0).rank(neighbours)
    normed = Votes(k=10, power=3.0, norm=CohortNorm(skip=1, size=10)).rank(neighbours)
    for a, b in zip(raw, normed, strict=True):
        assert a.labels == b.labels and a.confidences == b.confidences  # the answers' order is untouched
        order_raw, order_normed = np.argsort(a.match_scores), np.argsort(b.match_scores)
        assert np.array_equal(order_raw, order_normed)
        assert np.all(np.diff(np.array(b.match_scores)[order_raw]) >= 0)  # increasing in the raw score
    scores = rng.normal(size=30)
    mapped = CohortNorm(2, 15)(scores)
    assert np.all(np.sign(np.diff(mapped[np.argsort(scores)])) >= 0)


def test_fused_normalisation_keeps_the_ranking_and_confidences() -> None:
    candidates, actual = _pairs()
    fusion = fit_fusion(candidates, actual)
    raw, normed = Fused(fusion).rank(None, candidates), Fused(fusion, norm=CohortNorm(1, 5)).rank(None, candidates)
    assert [r.labels for r in raw] == [r.labels for r in normed]
    assert [r.confidences for r in raw] == [r.confidences for r in normed]  # still probabilities
    assert Fused(fusion, norm=CohortNorm()).score == "normalised fused probability"


def test_a_query_close_to_everything_is_not_mistaken_for_a_match() -> None:
    """Two queries with the same best score: one stands out of its cohort, the other (a photo of the
    gallery's scene) is as close to every identity. Raw, they are alike; normalised, only one passes."""
    norm = CohortNorm(skip=1, size=5)
    stands_out = np.array([0.8, 0.3, 0.32, 0.28, 0.35, 0.3, 0.31])
    close_to_all = np.array([0.8, 0.78, 0.79, 0.77, 0.8, 0.76, 0.78])
    assert norm(stands_out)[0] > 5 > norm(close_to_all)[0]


def test_the_normalisation_round_trips_and_bad_ones_are_one_line() -> None:
    votes = Votes(5, 3.0, norm=CohortNorm(2, 30))
    again = Votes.from_dict(json.loads(json.dumps(votes.to_dict())))
    assert again.norm == CohortNorm(2, 30) and again.score == "normalised similarity"
    assert Votes.from_dict({"k": 5, "power": 3.0, "threshold": None, "calibration": {}}).norm is None  # old index
    assert create_norm("none", 1, 20) is None and norm_from_dict({"method": "none"}) is None
    with pytest.raises(KenningError, match="unknown score normalisation"):
        norm_from_dict({"method": "tnorm"})
    with pytest.raises(KenningError, match="damaged"):
        norm_from_dict({"method": "cohort", "skip": "x"})
    with pytest.raises(KenningError, match="skip >= 0 and size >= 1"):
        CohortNorm(1, 0)
    assert CohortNorm(1, 20).cohort(np.array([0.5])) == (0.0, 1.0)  # no cohort: the score as it is
