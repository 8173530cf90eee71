"""Search settings by measured recall: the cheapest setting of each family that reaches the target."""

from __future__ import annotations

import numpy as np
import pytest

from kenning.index.faiss_index import FaissIndex
from kenning.index.tuning import exact_top_ids, measure, tune_search_params


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Points around 200 centres, noisy enough that a neighbour is not a near-copy."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, dim))
    x = centres[rng.integers(0, 200, n)] + 0.8 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_exact_neighbours_streamed_over_chunks_equal_one_search_over_all() -> None:
    x = _clustered(3000, 16)
    queries, ids = x[:50], np.arange(3000) + 7
    streamed = exact_top_ids(queries, ((x[a : a + 700], ids[a : a + 700]) for a in range(0, 3000, 700)), 10)
    whole = ids[np.argsort(-(queries @ x.T), axis=1)[:, :10]]
    assert all(set(a) == set(b) for a, b in zip(streamed, whole, strict=True))


def _recall(index: FaissIndex, queries: np.ndarray, truth: np.ndarray, params: str) -> float:
    return measure(index, params, queries, truth)[0]


@pytest.mark.parametrize("index_type,target", [("IVF64,Flat", 0.9), ("HNSW8", 0.99)])
def test_the_chosen_setting_reaches_the_target_and_the_next_cheaper_does_not(index_type: str, target: float) -> None:
    x = _clustered(20_000, 32)
    ids = np.arange(len(x))
    index = FaissIndex.create(32, index_type)
    index.add(x, ids)
    queries = x[np.random.default_rng(1).choice(len(x), 300, replace=False)]
    truth = exact_top_ids(queries, [(x, ids)], 10)
    point = tune_search_params(index, queries, truth, target, 10)
    assert point is not None and point.reached and point.recall >= target and point.qps > 0
    assert index.search_params == point.search_params  # left set to it
    name, value = point.search_params.split("=")
    assert int(value) > (1 if name == "nprobe" else 16)  # a real trade-off on these points: not the cheapest
    assert _recall(index, queries, truth, f"{name}={int(value) // 2}") < target
    assert _recall(index, queries, truth, point.search_params) == pytest.approx(point.recall)


def test_an_unreachable_target_keeps_the_most_accurate_setting_and_says_so() -> None:
    x = _clustered(20_000, 32)
    index = FaissIndex.create(32, "IVF64,PQ4")
    index.add(x, np.arange(len(x)))
    truth = exact_top_ids(x[:200], [(x, np.arange(len(x)))], 10)
    point = tune_search_params(index, x[:200], truth, 0.99, 10)
    assert point is not None and not point.reached and point.recall < 0.99
    best = max(_recall(index, x[:200], truth, f"nprobe={2**i}") for i in range(7))  # PQ codes cap the recall
    assert point.recall == pytest.approx(best, abs=0.005)  # stopped where doubling nprobe stopped helping


def test_an_exact_index_has_nothing_to_tune() -> None:
    index = FaissIndex.create(8, "Flat")
    index.add(_clustered(100, 8), np.arange(100))
    assert tune_search_params(index, _clustered(5, 8, 1), np.zeros((5, 10), np.int64), 0.95, 10) is None
