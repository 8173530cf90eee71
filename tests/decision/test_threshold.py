import json

import numpy as np
import pytest

from kenning.decision.threshold import Calibration, calibrate_threshold, describe_calibration, new_rate_threshold
from kenning.decision.voting import rank_labels
from kenning.errors import KenningError


def queries(known: list[float], new: list[float]) -> tuple[list, list[str]]:
    """Known queries match their label 'k' at the given similarities; new ones match 'z' at theirs."""
    ranked = [rank_labels(np.array([s, 0.1]), np.array(["k", "y"]), 3.0) for s in known]
    ranked += [rank_labels(np.array([s, 0.1]), np.array(["z", "y"]), 3.0) for s in new]
    return ranked, ["k"] * len(known) + ["unknown"] * len(new)


def test_threshold_separates_known_from_new() -> None:
    ranked, actual = queries([0.8, 0.85, 0.9], [0.3, 0.4, 0.5])
    cal = calibrate_threshold(ranked, actual, "unknown")
    assert 0.5 < cal.threshold <= 0.8
    assert cal.chosen.map5 == 1.0 and cal.chosen.far == 0.0 and cal.chosen.known_accuracy == 1.0
    assert cal.unknown_queries == 3
    thresholds = [p.threshold for p in cal.curve]
    assert min(thresholds) < 0.3 and max(thresholds) > 0.9
    assert cal.curve[0].far == 1.0 and cal.curve[-1].far == 0.0  # never / always unknown


def test_objectives_choose_differently_when_known_and_new_overlap() -> None:
    # overlapping: a new query at 0.75 sits among known ones
    ranked, actual = queries([0.6, 0.7, 0.8, 0.9], [0.3, 0.5, 0.75])
    by_map = calibrate_threshold(ranked, actual, "unknown", "map@5")
    by_gap = calibrate_threshold(ranked, actual, "unknown", "gap")
    strict = calibrate_threshold(ranked, actual, "unknown", "far", target_far=0.0)
    loose = calibrate_threshold(ranked, actual, "unknown", "far", target_far=0.34)
    assert strict.chosen.far == 0.0 and strict.threshold > 0.75  # the 0.75 stranger must be refused
    assert loose.chosen.far == pytest.approx(1 / 3) and loose.threshold <= 0.6  # lowest within budget
    assert loose.chosen.known_accuracy == 1.0 and strict.chosen.known_accuracy == pytest.approx(2 / 4)
    assert by_gap.chosen.gap == max(p.gap for p in by_gap.curve)
    assert by_map.chosen.map5 == max(p.map5 for p in by_map.curve)
    assert by_map.to_dict()["objective"] == "map@5" and strict.to_dict()["target_far"] == 0.0
    assert "false-accept rate <= 0.000" in describe_calibration(strict)
    stored = Calibration.from_dict(json.loads(json.dumps(strict.to_dict())), strict.threshold)
    assert stored.describe() == strict.describe() and stored.curve == strict.curve  # what an index keeps


def test_unknown_objective_is_refused() -> None:
    ranked, actual = queries([0.9], [0.3])
    with pytest.raises(ValueError, match="objective"):
        calibrate_threshold(ranked, actual, "unknown", "accuracy")


def test_indexes_calibrated_before_objectives_still_describe() -> None:
    old = {"map5": 0.5, "queries": 3, "unknown_queries": 1, "curve": [[0.1, 0.4], [0.2, 0.5]]}
    calibration = Calibration.from_dict(old, 0.2)
    assert describe_calibration(calibration) == "calibrated for map@5 on 3 held-out queries: MAP@5 0.5000"
    assert calibration.curve == []  # its curve has no GAP to draw
    assert describe_calibration(Calibration.from_dict({}, 0.3)) == "set by hand"


def test_a_damaged_stored_calibration_is_one_line() -> None:
    with pytest.raises(KenningError, match="calibration is damaged"):
        Calibration.from_dict({"objective": "map@5", "curve": [{"threshold": "x"}]}, 0.5)


def test_balanced_objective_and_its_spread_are_reproducible_with_the_seed() -> None:
    rng = np.random.default_rng(3)
    ranked, actual = queries(list(rng.uniform(0.4, 0.95, 40)), list(rng.uniform(0.2, 0.7, 20)))
    identities = [f"k{i % 10}" for i in range(40)] + [f"n{i}" for i in range(20)]
    cal = calibrate_threshold(ranked, actual, "unknown", "balanced", identities=identities, resamples=15, seed=7)
    assert cal.chosen.balanced == max(p.balanced for p in cal.curve) > 0
    again = calibrate_threshold(ranked, actual, "unknown", "balanced", identities=identities, resamples=15, seed=7)
    other = calibrate_threshold(ranked, actual, "unknown", "balanced", identities=identities, resamples=15, seed=8)
    assert again.spread == cal.spread and other.spread != cal.spread
    assert len(cal.spread.thresholds) == 15 and 0.0 <= cal.spread.uncertain_share <= 1.0
    low, high = cal.spread.low_high
    assert low <= high
    stored = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())), cal.threshold)
    assert stored.spread == cal.spread and stored.chosen.balanced == cal.chosen.balanced


def test_a_new_rate_answers_that_share_of_a_batch_new() -> None:
    ranked, _ = queries([0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    for rate in (0.0, 0.3, 0.5, 1.0):
        t = new_rate_threshold(ranked, rate)
        assert np.mean([r.best_similarity < t for r in ranked]) == pytest.approx(round(rate * 10) / 10)
    with pytest.raises(KenningError, match="between 0 and 1"):
        new_rate_threshold(ranked, 1.5)


def test_a_bagged_threshold_is_the_median_of_the_draws_choices() -> None:
    rng = np.random.default_rng(3)
    ranked, actual = queries(list(rng.uniform(0.4, 0.95, 40)), list(rng.uniform(0.2, 0.7, 20)))
    identities = [f"k{i % 10}" for i in range(40)] + [f"n{i}" for i in range(20)]
    kwargs = {"identities": identities, "resamples": 25, "seed": 7}
    bagged = calibrate_threshold(ranked, actual, "unknown", "balanced", bagged=True, **kwargs)
    best = calibrate_threshold(ranked, actual, "unknown", "balanced", **kwargs)
    assert bagged.spread == best.spread  # the same draws
    assert bagged.threshold == pytest.approx(float(np.median(bagged.spread.thresholds)))
    here = [p for p in bagged.curve if p.threshold == bagged.threshold]
    assert here == [bagged.chosen]  # its figures are measured on all the held-out queries at that threshold
    assert bagged.chosen.balanced <= best.chosen.balanced  # the best of the sample is the sample's maximum
    assert bagged.bagged and not best.bagged and "bagged: the median of 25 bootstrap draws" in bagged.describe()
    stored = Calibration.from_dict(json.loads(json.dumps(bagged.to_dict())), bagged.threshold)
    assert stored.bagged and stored.describe() == bagged.describe()
    with pytest.raises(KenningError, match="resamples"):
        calibrate_threshold(ranked, actual, "unknown", "balanced", identities=identities, bagged=True)
