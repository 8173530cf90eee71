import numpy as np

from kenning.eval.calibration import calibrate_threshold
from kenning.index.voting import rank_labels


def test_threshold_separates_known_from_new() -> None:
    # known queries match their label at 0.8-0.9; new ones have best matches of 0.3-0.5
    ranked, actual = [], []
    for s in (0.8, 0.85, 0.9):
        ranked.append(rank_labels(np.array([s, 0.2]), np.array(["k", "z"]), 3.0))
        actual.append("k")
    for s in (0.3, 0.4, 0.5):
        ranked.append(rank_labels(np.array([s, 0.1]), np.array(["z", "y"]), 3.0))
        actual.append("unknown")
    cal = calibrate_threshold(ranked, actual, "unknown")
    assert 0.5 < cal.threshold <= 0.8
    assert cal.map5 == 1.0
    assert cal.unknown_queries == 3
    assert min(t for t, _ in cal.curve) < 0.3 and max(t for t, _ in cal.curve) > 0.9
