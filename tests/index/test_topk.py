import numpy as np

from kenning.index.topk import select_top


def test_drops_self_removed_and_missing_then_pads() -> None:
    sims = np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.4, -np.inf, 0.3]], dtype=np.float32)
    ids = np.array([[1, 2, 3, 4], [5, 6, -1, 7]])
    top_sims, top_ids = select_top(sims, ids, 3, exclude=np.array([1, -1]), removed=np.array([3, 6]))
    assert top_ids.tolist() == [[2, 4, -1], [5, 7, -1]]
    assert top_sims[0, :2].tolist() == [np.float32(0.8), np.float32(0.6)] and np.isneginf(top_sims[:, 2]).all()
