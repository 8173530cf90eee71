import numpy as np
import pytest

from kenning.decision.voting import place_unknown, rank_labels


def test_weighted_vote_by_hand() -> None:
    sims = np.array([0.9, 0.8, 0.5, 0.4])
    labels = np.array(["a", "b", "b", "c"])
    ranked = rank_labels(sims, labels, power=1.0)
    # shares: a 0.9/2.6, b 1.3/2.6, c 0.4/2.6; confidence = share * nearest similarity
    assert ranked.labels == ["b", "a", "c"]
    assert ranked.confidences == pytest.approx([1.3 / 2.6 * 0.8, 0.9 / 2.6 * 0.9, 0.4 / 2.6 * 0.4])
    assert ranked.match_scores == pytest.approx([0.8, 0.9, 0.4])


def test_missing_neighbours_are_ignored() -> None:
    ranked = rank_labels(np.array([0.7, -np.inf]), np.array(["a", ""]), power=3.0)
    assert ranked.labels == ["a"]
    assert rank_labels(np.array([-np.inf]), np.array([""]), power=3.0).labels == []


def test_unknown_placement() -> None:
    ranked = rank_labels(np.array([0.9, 0.6, 0.5]), np.array(["a", "b", "c"]), power=1.0)
    assert place_unknown(ranked, 0.7, "new_whale").labels == ["a", "new_whale", "b", "c"]
    assert place_unknown(ranked, 0.95, "new_whale").labels[0] == "new_whale"  # best match too far
    assert place_unknown(ranked, None, "new_whale").labels == ["a", "b", "c"]  # never unknown
    assert place_unknown(ranked, 0.95, "new_whale").confidences[0] is None
    assert place_unknown(ranked, 0.7, "new_whale").confidences[2] == pytest.approx(ranked.confidences[1])
    assert len(place_unknown(ranked, 0.0, "u", top=2).labels) == 2
