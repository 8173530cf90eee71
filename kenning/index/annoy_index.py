"""Annoy backend (angular distance): a forest of random-projection trees built on disk and
memory-mapped on load, so several processes share one copy of a large gallery in the page cache.

Annoy cannot add or remove items once built; the gallery (gallery.py, store.py) keeps enrolments in
a small exact side index and removals as tombstones until `build-index --compact` rebuilds.
Annoy numbers items 0..n-1; the gallery ids of those items are kept in `<file>.ids.npy`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import annoy
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kenning.atomic import atomic_save, atomic_save_array
from kenning.errors import KenningError

DEFAULT_TREES = 64
MAX_TREES = 1024  # each tree costs about the vectors' size again on disk: 99999999 trees filled the disk
MAX_SEARCH_K = 10**9


def parse_trees(index_type: str) -> int:
    """`auto` or `trees=N`."""
    if index_type in ("", "auto"):
        return DEFAULT_TREES
    key, _, value = index_type.partition("=")
    if key.strip() != "trees" or not value.strip().isdigit() or not 1 <= int(value) <= MAX_TREES:
        raise KenningError(f"annoy index type must be 'trees=N' with N in [1, {MAX_TREES}], not {index_type!r}")
    return int(value)


def parse_search_k(search_params: str) -> int:
    """`` (Annoy's default, trees x k) or `search_k=N`: nodes inspected per query."""
    if not search_params:
        return -1
    key, _, value = search_params.partition("=")
    digits = value.strip().lstrip("-")
    if key.strip() != "search_k" or not digits.isdigit() or not -1 <= int(value) <= MAX_SEARCH_K:
        raise KenningError(
            f"annoy search parameters must be 'search_k=N' with N in [-1, {MAX_SEARCH_K}], not {search_params!r}"
        )
    return int(value)


def ids_path(path: Path) -> Path:
    return path.with_name(path.name + ".ids.npy")


class AnnoyIndex:
    backend = "annoy"

    def __init__(self, dim: int, index_type: str = "auto", search_params: str = ""):
        self.dim = dim
        self._trees = parse_trees(index_type)
        self.index_type = f"trees={self._trees}"
        self.search_params = search_params
        self._search_k = parse_search_k(search_params)
        self._pending_vectors: list[np.ndarray] = []
        self._ann: annoy.AnnoyIndex | None = None
        self._file: Path | None = None  # the file the built forest lives in (memory-mapped)
        self.ids = np.zeros(0, dtype=np.int64)

    @classmethod
    def create(cls, dim: int, index_type: str = "auto", search_params: str | None = None) -> AnnoyIndex:
        return cls(dim, index_type, search_params or "")

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    @property
    def built(self) -> bool:
        return self._ann is not None

    def training_size(self) -> int:
        return 0  # random-projection trees learn nothing before items are added

    def train(self, vectors: np.ndarray, seed: int = 0) -> None:
        pass

    def add(self, vectors: np.ndarray, ids: np.ndarray, progress: bool = False) -> None:
        if self.built:
            raise NotImplementedError("Annoy cannot add items after its trees are built")
        self._pending_vectors.append(np.asarray(vectors, dtype=np.float32))
        self.ids = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)])

    def set_search_params(self, search_params: str) -> None:
        self._search_k = parse_search_k(search_params)
        self.search_params = search_params

    def remove(self, ids: np.ndarray) -> int:
        raise NotImplementedError("Annoy cannot remove items from built trees")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), (n, k) each; angular distance d = sqrt(2 - 2 cos), so cos = 1 - d^2 / 2."""
        if not self.built:
            self._build(None, progress=False)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for row, q in enumerate(np.asarray(queries, dtype=np.float32)):
            items, dists = self._ann.get_nns_by_vector(q.tolist(), k, self._search_k, True)
            sims[row, : len(items)] = 1.0 - np.square(np.asarray(dists, dtype=np.float32)) / 2.0
            ids[row, : len(items)] = self.ids[items]
        return sims, ids

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        positions = pd.Index(self.ids).get_indexer(np.asarray(ids, dtype=np.int64))
        if (positions < 0).any():
            raise KenningError(f"ids not in the Annoy index: {np.asarray(ids)[positions < 0][:5].tolist()}")
        if not self.built:
            return np.concatenate(self._pending_vectors)[positions]
        return np.array([self._ann.get_item_vector(int(p)) for p in positions], dtype=np.float32).reshape(-1, self.dim)

    def save(self, path: Path, progress: bool = False) -> None:
        """Build the trees straight into `path` (on disk, not in memory) unless already built."""
        atomic_save_array(ids_path(path), self.ids)
        if self._file is not None:
            atomic_save(path, lambda p: shutil.copyfile(self._file, p))
        elif self.built:
            atomic_save(path, lambda p: self._ann.save(str(p)))
        else:
            atomic_save(path, lambda p: self._build(p, progress))
        self._reopen(path)

    @classmethod
    def load(cls, path: Path, dim: int, index_type: str, search_params: str) -> AnnoyIndex:
        index = cls(dim, index_type, search_params)
        index.ids = np.load(ids_path(path), allow_pickle=False)
        index._reopen(path)
        if index._ann.get_n_items() != len(index.ids):
            raise KenningError(f"{path}: {index._ann.get_n_items()} items but {len(index.ids)} ids")
        return index

    def _reopen(self, path: Path) -> None:
        ann = annoy.AnnoyIndex(self.dim, "angular")
        if not ann.load(str(path), False):  # memory-mapped, pages read on demand
            raise KenningError(f"cannot load Annoy index {path}")
        self._ann, self._file = ann, path
        self._pending_vectors = []

    def _build(self, path: Path | None, progress: bool) -> None:
        ann = annoy.AnnoyIndex(self.dim, "angular")
        ann.set_seed(0)
        if path is not None:
            ann.on_disk_build(str(path))
        vectors = np.concatenate(self._pending_vectors) if self._pending_vectors else np.zeros((0, self.dim))
        for i, v in enumerate(tqdm(vectors, desc="annoy items", unit="vec", disable=not progress)):
            ann.add_item(i, v.tolist())
        ann.build(self._trees, -1)
        self._ann = ann
        self._pending_vectors = []
