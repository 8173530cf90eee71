"""Encounter figures and per-viewpoint figures of an evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kenning.decision.voting import RankedLabels
from kenning.errors import KenningError
from kenning.eval.encounters import encounter_metrics
from kenning.eval.evaluate import EvalResult
from kenning.eval.report import per_viewpoint


def _result(actual: list[str], encounters: list[str], views: list[str], ranked: list[RankedLabels]) -> EvalResult:
    n = len(actual)
    per_query = pd.DataFrame(
        {
            "image_id": [f"{i}.jpg" for i in range(n)],
            "actual": actual,
            "known": [a != "new" for a in actual],
            "viewpoint": views,
            "encounter": encounters,
            "correct": [r.labels[0] == a for r, a in zip(ranked, actual, strict=True)],
        }
    )
    empty = np.zeros((n, 0))
    return EvalResult({"threshold": 0.5}, per_query, ranked, empty, empty, empty, "new")


def _ranked(**scores: float) -> RankedLabels:
    labels = sorted(scores, key=lambda lab: -scores[lab])
    return RankedLabels(labels, [scores[x] for x in labels], [scores[x] for x in labels])


def test_two_flanks_that_disagree_alone_agree_together() -> None:
    # photo by photo, each flank puts the wrong identity first; together "a" wins on both flanks
    ranked = [_ranked(b=0.7, a=0.6), _ranked(c=0.65, a=0.6), _ranked(x=0.2)]
    result = _result(["a", "a", "new"], ["e1", "e1", ""], ["left", "right", ""], ranked)
    figures = encounter_metrics(result)
    assert figures["encounters"] == 2 and figures["recall@1"] == 1.0
    assert figures["known_accuracy"] == 1.0 and figures["unknown_accuracy"] == 1.0  # x at 0.2 < 0.5: new


def test_an_encounter_of_two_identities_is_refused() -> None:
    result = _result(["a", "b"], ["e1", "e1"], ["", ""], [_ranked(a=0.9), _ranked(b=0.9)])
    with pytest.raises(KenningError, match="2 identities"):
        encounter_metrics(result)


def test_per_viewpoint_figures() -> None:
    ranked = [_ranked(a=0.9), _ranked(b=0.9), _ranked(new=0.1)]
    result = _result(["a", "a", "new"], ["", "", ""], ["left", "right", "right"], ranked)
    table = per_viewpoint(result.per_query)
    assert table == {"left": (1, 1, 1.0, None), "right": (2, 1, 0.0, 1.0)}
    assert per_viewpoint(result.per_query.assign(viewpoint="")) == {}
