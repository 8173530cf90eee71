"""FAISS backend: any factory string (exact `Flat`, `IVF...`, `HNSW...`, `...PQ...,RFlat`), inner product.

GPU when faiss was built with GPUs (faiss-gpu): the index is copied there for building and
searching (sharded across GPUs when there are several) and copied back to the CPU to save; an
index type FAISS cannot put on a GPU (HNSW) stays on the CPU.
"""

from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from kenning.atomic import atomic_save
from kenning.errors import KenningError, first_line

# Galleries up to this size are searched exactly; above it an inverted file answers in a fraction of the time.
EXACT_LIMIT = 50_000
# Above this many vectors the full float32 vectors (2 KiB each at 512-d) no longer fit comfortably in memory.
PQ_LIMIT = 5_000_000
ADD_CHUNK = 65_536


def ivf_lists(n: int) -> int:
    """FAISS's guideline of about 4 sqrt(n) lists (a power of two), with the 39 training vectors per
    list k-means needs."""
    nlist = 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))
    return max(1, min(nlist, 2 ** int(math.log2(max(n // 39, 1)))))


def choose_index_type(n: int, dim: int) -> str:
    """FAISS factory string for `n` gallery vectors: exact when small, IVF when large, IVF-PQ when huge
    (PQ: one byte per 8 dimensions)."""
    if n <= EXACT_LIMIT:
        return "Flat"
    nlist = ivf_lists(n)
    if n <= PQ_LIMIT:
        return f"IVF{nlist},Flat"
    return f"IVF{nlist},PQ{max(1, dim // 8)}"


def default_search_params(index_type: str) -> str:
    """nprobe / efSearch that reach recall@10 >= 0.95 in benchmarks/index_search.py."""
    ivf = ivf_nlist(index_type)
    if ivf:
        return f"nprobe={max(16, ivf // 256)}"
    if index_type.startswith("HNSW"):
        return "efSearch=128"
    return ""


def ivf_nlist(index_type: str) -> int:
    head = index_type.split(",")[0]
    if head.startswith("IVF"):
        digits = "".join(c for c in head[3:] if c.isdigit())
        return int(digits) if digits else 0
    return 0


# The factory components Kenning builds (ids are mapped by Kenning, so no IDMap), each with the range
# of its numbers: FAISS aborts the whole process on some out-of-range values (HNSW0) instead of raising.
_COMPONENTS = {
    "Flat": re.compile(r"Flat"),
    "IVF": re.compile(r"IVF(?P<nlist>\d+)(?:_HNSW(?P<ivf_m>\d+))?"),
    "HNSW": re.compile(r"HNSW(?P<m>\d+)(?:_Flat)?"),
    "PQ": re.compile(r"PQ(?P<pq>\d+)(?:x(?P<bits>\d+))?"),
    "SQ": re.compile(r"SQ(?:4|6|8|fp16|bf16)"),
    "RFlat": re.compile(r"RFlat|Refine\(Flat\)"),
    "OPQ": re.compile(r"OPQ(?P<opq>\d+)(?:_(?P<opq_d>\d+))?"),
    "PCA": re.compile(r"PCAR?(?P<pca>\d+)"),
    "L2norm": re.compile(r"L2norm"),
}
_BOUNDS = {"nlist": (1, 2**20), "ivf_m": (2, 256), "m": (2, 256), "pq": (1, 4096), "bits": (1, 16)}


def check_index_type(index_type: str, dim: int) -> str:
    """`index_type` when it is a FAISS factory string of the components Kenning supports with numbers
    in range; else one line saying what is wrong. Checked before FAISS sees it."""
    if not index_type or len(index_type) > 200:
        raise KenningError(f"FAISS index type {index_type[:200]!r} is empty or too long")
    bounds = {**_BOUNDS, "opq": (1, dim), "opq_d": (1, dim), "pca": (1, dim)}
    for part in index_type.split(","):
        match = next((m for c in _COMPONENTS.values() if (m := c.fullmatch(part.strip()))), None)
        if match is None:
            raise KenningError(
                f"FAISS index type {index_type!r}: {part!r} is not a component Kenning builds "
                f"(Flat, IVFn, HNSWm, PQm[xb], SQ8, RFlat, OPQm, PCAd, L2norm; ids are mapped by Kenning, no IDMap)"
            )
        for name, text in match.groupdict().items():
            low, high = bounds[name]
            if text is not None and not low <= int(text) <= high:
                raise KenningError(f"FAISS index type {index_type!r}: {part!r} needs a number in [{low}, {high}]")
    return index_type


def _to_gpu(index: faiss.Index) -> faiss.Index | None:
    """A GPU copy of `index`, or None without GPUs or for a type FAISS has no GPU version of."""
    if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
        return None
    try:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = faiss.get_num_gpus() > 1  # each GPU holds a slice of the gallery; searches fan out, merge
        return faiss.index_cpu_to_all_gpus(index, co=options)
    except RuntimeError:
        return None


class FaissIndex:
    backend = "faiss"

    def __init__(self, index: faiss.Index, index_type: str, search_params: str = ""):
        self.index = index
        self.index_type = index_type
        self.search_params = search_params
        self.dim = index.d
        self._apply_search_params(index)
        self._gpu: faiss.Index | None = None
        self._gpu_stale = True
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def create(cls, dim: int, index_type: str = "Flat", search_params: str | None = None) -> FaissIndex:
        check_index_type(index_type, dim)
        try:
            index = faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise KenningError(f"FAISS cannot build index type {index_type!r}: {first_line(exc)}") from None
        if not isinstance(index, faiss.IndexIVF):  # IVF keeps ids itself; the rest need an id map
            index = faiss.IndexIDMap2(index)
        params = default_search_params(index_type) if search_params is None else search_params
        return cls(index, index_type, params)

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    @property
    def is_exact(self) -> bool:
        return self.index_type == "Flat"

    def training_size(self) -> int:
        """Vectors the structure wants to learn from before the first add (0: none, or already trained)."""
        return 0 if self.index.is_trained else max(64 * ivf_nlist(self.index_type), 65_536)

    def train(self, vectors: np.ndarray, seed: int = 0) -> None:
        """Train the coarse quantizer / codebooks on a random sample."""
        if self.index.is_trained:
            return
        nlist = ivf_nlist(self.index_type)
        if len(vectors) < 39 * nlist:  # FAISS's own minimum of training points per list
            raise KenningError(
                f"{self.index_type} needs at least {39 * nlist} vectors to train its {nlist} lists, got "
                f"{len(vectors)}: use a smaller nlist or Flat"
            )
        size = min(len(vectors), max(64 * nlist, 65_536))  # the sample training_size() asks for
        rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size, replace=False))
        sample = np.ascontiguousarray(vectors[rows], dtype=np.float32)
        target = _to_gpu(self.index) or self.index
        try:
            target.train(sample)
        except RuntimeError as exc:
            raise KenningError(f"FAISS could not train {self.index_type}: {first_line(exc)}") from None
        if target is not self.index:
            self.index = faiss.index_gpu_to_cpu(target)

    def add(self, vectors: np.ndarray, ids: np.ndarray, progress: bool = False) -> None:
        """Add in chunks (trains first when the index type needs it), with a progress bar when asked."""
        if len(vectors) == 0:
            return
        with tqdm(total=len(vectors), desc="indexing", unit="vec", disable=not progress) as bar:
            if not self.index.is_trained:
                bar.set_description(f"training {self.index_type}")
                self.train(vectors)
                bar.set_description("indexing")
            for start in range(0, len(vectors), ADD_CHUNK):
                chunk = np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32)
                try:
                    self.index.add_with_ids(chunk, np.asarray(ids[start : start + ADD_CHUNK], dtype=np.int64))
                except RuntimeError as exc:
                    raise KenningError(f"FAISS could not add to {self.index_type}: {first_line(exc)}") from None
                bar.update(len(chunk))
        self._gpu_stale = True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), each (n, k); missing neighbours have id -1 and similarity -inf."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        searcher = self._searcher()
        if searcher is self.index and self.is_exact and len(queries) <= 2 and self.ntotal >= 100_000:
            sims, ids = self._exact_few(queries, k)  # beyond two queries FAISS's batched BLAS path is faster
        else:
            sims, ids = searcher.search(queries, k)
        sims[ids < 0] = -np.inf
        return sims, ids

    def remove(self, ids: np.ndarray) -> int:
        try:
            ids = np.ascontiguousarray(ids, dtype=np.int64)  # IDSelectorArray: the one IVF with a direct map takes
            removed = self.index.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)))
        except RuntimeError:
            raise NotImplementedError(f"FAISS {self.index_type} cannot remove vectors") from None
        self._gpu_stale = True
        return int(removed)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of `ids` (decoded, so approximate for PQ)."""
        if len(ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if isinstance(self.index, faiss.IndexIVF) and self.index.direct_map.type == faiss.DirectMap.NoMap:
            self.index.set_direct_map_type(faiss.DirectMap.Hashtable)
        return np.stack([self.index.reconstruct(int(i)) for i in ids])

    def save(self, path: Path, progress: bool = False) -> None:
        try:
            atomic_save(path, lambda p: faiss.write_index(self.index, str(p)))
        except RuntimeError as exc:  # FAISS reports a full disk or a failed write as RuntimeError
            raise KenningError(
                f"cannot write {path.name} (disk full?): {first_line(exc)}; nothing was changed"
            ) from None

    @classmethod
    def load(cls, path: Path, index_type: str, search_params: str) -> FaissIndex:
        return cls(faiss.read_index(str(path)), index_type, search_params)

    def set_search_params(self, search_params: str) -> None:
        self.search_params = search_params
        self._apply_search_params(self.index)
        self._gpu_stale = True

    def _apply_search_params(self, index: faiss.Index) -> None:
        if not self.search_params:
            return
        try:
            faiss.ParameterSpace().set_index_parameters(index, self.search_params)
        except RuntimeError as exc:
            raise KenningError(
                f"search parameters {self.search_params!r} do not apply to {self.index_type}: {first_line(exc)}"
            ) from None

    def _searcher(self) -> faiss.Index:
        if self._gpu_stale:
            self._gpu = _to_gpu(self.index)
            if self._gpu is not None:
                self._apply_search_params(self._gpu)
            self._gpu_stale = False
        return self._gpu or self.index

    def _exact_few(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # Hand-written because FAISS searches one query on one thread and spends more time in its
        # heap than in the dot products (1M x 512: 171 ms vs 85 ms here); this splits the scan over
        # all threads with FAISS's SIMD kernel (which releases the GIL) and selects with argpartition.
        flat = faiss.downcast_index(self.index.index)
        n = flat.ntotal
        xb = faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)
        id_map = faiss.rev_swig_ptr(self.index.id_map.data(), n)
        threads = max(1, faiss.omp_get_max_threads())
        bounds = np.linspace(0, n, threads + 1).astype(np.int64)
        self._pool = self._pool or ThreadPoolExecutor(threads)
        all_sims, all_ids = [], []
        for q in queries:
            scores = np.empty(n, dtype=np.float32)

            def scan(part: int, q: np.ndarray = q, scores: np.ndarray = scores) -> None:
                a, b = int(bounds[part]), int(bounds[part + 1])
                faiss.fvec_inner_products_ny(
                    faiss.swig_ptr(scores[a:b]), faiss.swig_ptr(q), faiss.swig_ptr(xb[a:b]), self.dim, b - a
                )

            list(self._pool.map(scan, range(threads)))
            top = np.argpartition(scores, n - k)[n - k :]
            top = top[np.argsort(-scores[top], kind="stable")]
            all_sims.append(scores[top])
            all_ids.append(id_map[top].astype(np.int64))
        return np.stack(all_sims), np.stack(all_ids)
