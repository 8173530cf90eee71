"""Fusion: isotonic calibrators are monotone probabilities, survive save/load, refuse damage; the
fused ranking puts a strong match in either stage first."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kenning.decision.fusion import Calibrator, Candidates, Fusion, fit_fusion, rank_fused
from kenning.errors import KenningError


def _pairs(seed: int = 0, n: int = 400) -> tuple[list[Candidates], list[str]]:
    """Queries whose right identity scores higher in both stages, with noise."""
    rng = np.random.default_rng(seed)
    candidates, actual = [], []
    for q in range(n // 4):
        labels = [f"id{q}-{j}" for j in range(4)]
        same = rng.integers(0, 4)
        glob = rng.normal(0.3, 0.1, 4)
        loc = rng.exponential(2.0, 4)
        glob[same] += 0.2
        loc[same] += 4.0
        candidates.append(Candidates(labels, {"global": glob, "local": loc}))
        actual.append(labels[same] if q % 5 else "unknown")
    return candidates, actual


def test_calibrators_are_monotone_probabilities_and_survive_save_and_load() -> None:
    candidates, actual = _pairs()
    fusion = fit_fusion(candidates, actual, model="m")
    grid = np.linspace(-1, 20, 500)
    for part, calibrator in fusion.calibrators.items():
        p = calibrator(grid)
        assert np.all(np.diff(p) >= 0) and p.min() >= 0 and p.max() <= 1, part
        assert p[-1] > p[0]  # it learnt something: high scores mean the same identity
    loaded = Fusion.from_dict(json.loads(json.dumps(fusion.to_dict())))
    scores = {"global": np.linspace(0, 1, 50), "local": np.linspace(0, 12, 50)}
    assert np.array_equal(loaded.probability(scores), fusion.probability(scores))
    assert loaded.fitted_on["positives"] == sum(a != "unknown" for a in actual)


@pytest.mark.parametrize(
    "damage",
    [
        {"x": [0, 1], "y": [0.8, 0.2]},  # decreasing
        {"x": [0, 1], "y": [0.1, 1.5]},  # not a probability
        {"x": [0, 1, 2], "y": [0.1, 0.2]},  # shapes differ
        {"x": [0, float("nan")], "y": [0.1, 0.2]},
    ],
)
def test_a_damaged_calibrator_is_refused(damage: dict) -> None:
    fusion = fit_fusion(*_pairs()).to_dict()
    fusion["calibrators"]["local"] = damage
    with pytest.raises(KenningError, match="rebuild the index"):
        Fusion.from_dict(fusion)


def test_too_few_same_identity_pairs_are_refused() -> None:
    candidates, _ = _pairs(n=40)
    with pytest.raises(KenningError, match="same-identity"):
        fit_fusion(candidates, ["nobody"] * len(candidates))


def test_a_strong_local_match_outranks_a_slightly_closer_embedding() -> None:
    fusion = Fusion(
        {
            "global": Calibrator(np.array([0.2, 0.6]), np.array([0.0, 0.5])),
            "local": Calibrator(np.array([0.0, 10.0]), np.array([0.0, 1.0])),
        }
    )
    ranked = rank_fused(
        Candidates(["near", "matched"], {"global": np.array([0.5, 0.45]), "local": np.array([0.5, 9.0])}), fusion
    )
    assert ranked.labels == ["matched", "near"]
    assert ranked.confidences == ranked.match_scores  # the threshold is set on the fused probability
    assert ranked.parts[0]["local"] == 9.0 and 0 < ranked.parts[0]["probability"] <= 1
