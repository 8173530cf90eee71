"""Grouping a batch's photos by their links: which joins are made, which are refused, and what a
group answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kenning.decision.encounters import combine
from kenning.decision.grouping import Grouping, grouped, link_groups, sure_labels
from kenning.decision.voting import RankedLabels
from kenning.errors import KenningError


def _ranked(label: str, score: float) -> RankedLabels:
    return RankedLabels([label, "other"], [score, score / 2], [score, score / 2])


def test_links_at_or_above_the_threshold_join_photos_and_weaker_ones_do_not() -> None:
    partner = np.array([1, 0, 3, 2, 0])
    score = np.array([0.9, 0.9, 0.5, 0.5, 0.49])
    groups = link_groups(partner, score, 0.5, [None] * 5)
    assert groups.tolist() == [0, 0, 1, 1, 2]
    assert link_groups(partner, score, 0.95, [None] * 5).tolist() == [0, 1, 2, 3, 4]
    assert link_groups(partner, score, None, [None] * 5).tolist() == [0, 1, 2, 3, 4]
    # No local evidence is no link, even where the threshold is 0.
    assert link_groups(np.array([1, 0]), np.array([0.0, 0.0]), 0.0, [None, None]).tolist() == [0, 1]


def test_two_photos_sure_of_different_identities_never_share_a_group_even_through_a_third() -> None:
    # 0 is sure of "a", 2 of "b"; 1 is unsure and links to both, 0's link the stronger: 1 joins 0, 2 stays alone.
    partner = np.array([1, 0, 1])
    score = np.array([0.9, 0.9, 0.8])
    groups = link_groups(partner, score, 0.1, ["a", None, "b"])
    assert groups.tolist() == [0, 0, 1]
    # The same identity on both sides is no conflict.
    assert link_groups(partner, score, 0.1, ["a", None, "a"]).tolist() == [0, 0, 0]


def test_a_group_answers_its_photos_combined_and_a_photo_alone_answers_itself() -> None:
    ranked = [_ranked("a", 0.8), _ranked("b", 0.3), _ranked("c", 0.6)]
    views = ["left", "left", "right"]
    answers = grouped(ranked, views, np.array([0, 0, 1]))
    together = combine(ranked[:2], views[:2])
    assert answers[0] == answers[1] == together and answers[0].labels[0] == "a"
    assert answers[2] == combine([ranked[2]], ["right"])


def test_a_photo_is_sure_of_its_first_label_at_or_above_the_threshold() -> None:
    ranked = [_ranked("a", 0.8), RankedLabels(["x", "y"], [0.9, 0.1], [0.2, 0.7]), _ranked("c", 0.1)]
    assert sure_labels(ranked, 0.5) == ["a", "y", None]
    assert sure_labels(ranked, None) == ["a", "x", "c"]


def test_a_stored_grouping_round_trips_and_a_damaged_one_is_refused() -> None:
    grouping = Grouping(0.42, 0.3, 0.7, "balanced", {"balanced": 0.5})
    assert Grouping.from_dict(grouping.to_dict()) == grouping
    assert Grouping.from_dict({}) is None
    assert Grouping.from_dict({**grouping.to_dict(), "link": None}).link is None
    for damaged in ({"link": math.nan}, {"threshold": True}, {"quantile": "0.7"}, {"extra": 1}):
        with pytest.raises(KenningError, match="grouping is damaged"):
            Grouping.from_dict({**grouping.to_dict(), **damaged})
