"""FAISS exact inner-product search with stable int64 ids (so entries can later be removed)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from kenning.atomic import atomic_save


class FaissIndex:
    name = "faiss-flat-ip"

    def __init__(self, dim: int, index: faiss.Index | None = None):
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), each (n, k); missing neighbours have id -1 and similarity -inf.

        `exclude[i]` is an id query i must not match (itself, leave-one-out), or -1.
        """
        if exclude is not None:
            sims, ids = self.search(queries, k + 1)
            drop = ids == exclude[:, None]
            keep = np.where(drop.any(axis=1, keepdims=True), ~drop, np.arange(ids.shape[1]) < k)
            sims = np.where(keep, sims, -np.inf)
            ids = np.where(keep, ids, -1)
            order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        sims, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        sims[ids < 0] = -np.inf
        return sims, ids

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        return np.stack([self.index.reconstruct(int(i)) for i in ids]) if len(ids) else np.zeros((0, self.dim))

    def save(self, path: Path) -> None:
        atomic_save(path, lambda p: faiss.write_index(self.index, str(p)))

    @classmethod
    def load(cls, path: Path) -> FaissIndex:
        index = faiss.read_index(str(path))
        return cls(index.d, index)
