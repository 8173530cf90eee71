"""Annoy backend: built on disk, memory-mapped on load, gallery ids kept beside the trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kenning.errors import KenningError
from kenning.index.annoy_index import AnnoyIndex, ids_path


def _unit(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_build_on_disk_load_mmap_search(tmp_path: Path) -> None:
    vectors, ids = _unit(500), np.arange(500) * 2 + 11
    index = AnnoyIndex.create(16, "trees=10", "search_k=5000")
    index.add(vectors, ids)
    path = tmp_path / "base.ann"
    index.save(path)
    assert path.is_file() and ids_path(path).is_file()
    loaded = AnnoyIndex.load(path, 16, "trees=10", "search_k=5000")
    sims, found = loaded.search(vectors[:4], 3)
    assert found[:, 0].tolist() == ids[:4].tolist()
    assert sims[:, 0] == pytest.approx(np.ones(4), abs=1e-3)  # cosine from angular distance
    exact = np.argsort(-(vectors[:4] @ vectors.T), axis=1)[:, :3]
    assert found.tolist() == ids[exact].tolist()
    assert np.allclose(loaded.reconstruct(ids[[7]]), vectors[7], atol=1e-6)
    with pytest.raises(NotImplementedError):
        loaded.add(vectors[:1], np.array([9999]))
    with pytest.raises(NotImplementedError):
        loaded.remove(ids[:1])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(KenningError, match="trees=N"):
        AnnoyIndex.create(16, "IVF16,Flat")
    with pytest.raises(KenningError, match="search_k=N"):
        AnnoyIndex.create(16, "auto", "nprobe=4")
