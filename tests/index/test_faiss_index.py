"""FAISS backend: index type by size, add / search / remove / save / load, the threaded exact path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kenning.errors import KenningError
from kenning.index.faiss_index import FaissIndex, choose_index_type, default_search_params, ivf_lists


def _unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_index_type_by_size() -> None:
    assert choose_index_type(1_000, 512) == "Flat"
    assert choose_index_type(100_000, 512) == "IVF1024,Flat"
    assert choose_index_type(1_000_000, 512) == "IVF4096,Flat"
    assert choose_index_type(10_000_000, 512) == "IVF16384,PQ64"
    assert ivf_lists(10_000) == 256  # 39 training vectors per list
    assert default_search_params("IVF4096,Flat") == "nprobe=16"
    assert default_search_params("IVF16384,PQ64") == "nprobe=64"
    assert default_search_params("HNSW32") == "efSearch=128"
    assert default_search_params("Flat") == ""


@pytest.mark.parametrize("index_type", ["Flat", "IVF16,Flat", "HNSW16", "IVF16,PQ4,RFlat"])
def test_add_search_remove_save_load(index_type: str, tmp_path: Path) -> None:
    vectors = _unit(2000)
    ids = np.arange(2000) * 3 + 7  # ids are the gallery's, not positions
    index = FaissIndex.create(16, index_type, "nprobe=16" if "IVF" in index_type else None)
    index.add(vectors, ids)
    sims, found = index.search(vectors[:5], 4)
    assert found[:, 0].tolist() == ids[:5].tolist()
    assert sims[:, 0] == pytest.approx(np.ones(5), abs=1e-4)
    assert np.allclose(index.reconstruct(ids[[3]]), vectors[3], atol=1e-5)
    index.save(tmp_path / "i.faiss")
    loaded = FaissIndex.load(tmp_path / "i.faiss", index_type, index.search_params)
    assert loaded.search(vectors[:5], 4)[1].tolist() == found.tolist()
    if index_type in ("HNSW16", "IVF16,PQ4,RFlat"):
        with pytest.raises(NotImplementedError):
            loaded.remove(ids[:2])
    else:
        assert loaded.remove(ids[:2]) == 2 and loaded.ntotal == 1998
        assert ids[0] not in loaded.search(vectors[:1], 4)[1]


def test_ivf_recall_on_clustered_vectors() -> None:
    """Embeddings cluster by identity; IVF with its default nprobe finds the exact top-10 nearly always."""
    centres = _unit(50, seed=1)
    noisy = centres[np.random.default_rng(5).integers(0, 50, 5000)] + _unit(5000, seed=6) * 0.3
    vectors = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    exact = FaissIndex.create(16, "Flat")
    approx = FaissIndex.create(16, "IVF32,Flat")
    for index in (exact, approx):
        index.add(vectors, np.arange(5000))
    queries = vectors[:100] + _unit(100, seed=2) * 0.1
    truth, found = exact.search(queries, 10)[1], approx.search(queries, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found, strict=True)])
    assert recall >= 0.95  # default nprobe=16 of 32 lists


def test_exact_single_query_path_matches_faiss() -> None:
    """Galleries >= 100k answer one query with the threaded scan; it must equal FAISS's own search."""
    vectors = _unit(120_000, seed=3)
    index = FaissIndex.create(16, "Flat")
    index.add(vectors, np.arange(120_000) + 5)
    queries = _unit(2, seed=4)
    sims, ids = index.search(queries, 10)  # two queries: the threaded path
    ref_sims, ref_ids = index.index.search(queries, 10)
    assert ids.tolist() == ref_ids.tolist() and np.allclose(sims, ref_sims, atol=1e-5)


def test_bad_factory_string_and_params() -> None:
    with pytest.raises(KenningError, match="'NotAType' is not a component Kenning builds"):
        FaissIndex.create(16, "NotAType")
    with pytest.raises(KenningError, match="do not apply to Flat"):
        FaissIndex.create(16, "Flat", "nprobe=4")
    with pytest.raises(KenningError, match="needs at least 624 vectors"):
        FaissIndex.create(16, "IVF16,Flat").add(_unit(100), np.arange(100))
