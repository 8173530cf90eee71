"""The interface every vector backend offers, and the factory that picks one by name.

A backend holds the bulk of the gallery (built once, then searched); the gallery (gallery.py, store.py) adds
enrolments beside it and tombstones for removals, so a backend that cannot add or remove after
building (Annoy, FAISS HNSW) still serves a catalogue that changes daily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from kenning.errors import KenningError
from kenning.index.annoy_index import AnnoyIndex
from kenning.index.faiss_index import FaissIndex, choose_index_type

BACKENDS = ("faiss", "annoy")
SUFFIX = {"faiss": ".faiss", "annoy": ".ann"}


class VectorIndex(Protocol):
    backend: str
    dim: int
    index_type: str
    search_params: str

    @property
    def ntotal(self) -> int: ...

    def training_size(self) -> int:
        """How many vectors the structure learns from (IVF lists, PQ codebooks) before the first add;
        0 when it learns nothing or is trained. A streamed build trains on such a sample, then adds."""
        ...

    def train(self, vectors: np.ndarray, seed: int = 0) -> None: ...

    def add(self, vectors: np.ndarray, ids: np.ndarray, progress: bool = False) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), each (n, k), best first; id -1 and similarity -inf where none."""
        ...

    def remove(self, ids: np.ndarray) -> int:
        """Remove `ids`; raises NotImplementedError where the structure cannot (then rebuild)."""
        ...

    def reconstruct(self, ids: np.ndarray) -> np.ndarray: ...

    def set_search_params(self, search_params: str) -> None: ...

    def save(self, path: Path, progress: bool = False) -> None:
        """Write atomically to `path` (Annoy builds its trees there, with a progress bar when asked)."""
        ...


def create_index(
    backend: str, dim: int, size: int, index_type: str = "auto", search_params: str = "auto"
) -> VectorIndex:
    """A new empty backend for `size` vectors; `auto` picks the index type by size and its search parameters."""
    params = None if search_params == "auto" else search_params
    if backend == "faiss":
        return FaissIndex.create(dim, choose_index_type(size, dim) if index_type == "auto" else index_type, params)
    if backend == "annoy":
        return AnnoyIndex.create(dim, index_type, params)
    raise KenningError(f"unknown index backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def load_index(backend: str, path: Path, dim: int, index_type: str, search_params: str) -> VectorIndex:
    if backend == "faiss":
        return FaissIndex.load(path, index_type, search_params)
    if backend == "annoy":
        return AnnoyIndex.load(path, dim, index_type, search_params)
    raise KenningError(f"unknown index backend {backend!r}; choose one of {', '.join(BACKENDS)}")
