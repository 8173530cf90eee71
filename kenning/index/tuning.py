"""Search settings chosen by measured recall: the fastest nprobe / efSearch / k_factor_rf that reaches
the target recall@k against exact search, on a sample of the gallery's own vectors.

This is FAISS's autotune (ParameterSpace.explore, as autofaiss uses it) written out, because
ParameterSpace does not see through the wrappers Kenning builds (IndexIDMap2 around HNSW,
IndexRefine for `,RFlat`): it lists no parameters for them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from kenning.index.faiss_index import FaissIndex, ivf_nlist

TUNING_QUERIES = 1000
PLATEAU = 0.002  # recall gained by doubling a setting below which a family counts as saturated


@dataclass
class OperatingPoint:
    search_params: str
    recall: float  # recall@k against exact search on the sample
    qps: float  # batched queries per second on this machine when measured
    target: float
    k: int
    queries: int
    reached: bool  # False: no setting reached the target; the most accurate one (or as good, faster) was kept

    def to_dict(self) -> dict:
        return asdict(self)


def exact_top_ids(queries: np.ndarray, chunks: Iterable[tuple[np.ndarray, np.ndarray]], k: int) -> np.ndarray:
    """Ids of each query's k most similar vectors (inner product) over `chunks` of (vectors, ids),
    streamed: one chunk in memory at a time, searched by FAISS's blocked exact k-NN."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    best_sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for vectors, ids in chunks:
        if not len(vectors):
            continue
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        sims, rows = faiss.knn(queries, vectors, min(k, len(vectors)), metric=faiss.METRIC_INNER_PRODUCT)
        all_sims = np.concatenate([best_sims, sims], axis=1)
        all_ids = np.concatenate([best_ids, np.asarray(ids, np.int64)[rows]], axis=1)
        top = np.argpartition(-all_sims, k - 1, axis=1)[:, :k]
        best_sims = np.take_along_axis(all_sims, top, axis=1)
        best_ids = np.take_along_axis(all_ids, top, axis=1)
    return best_ids


def candidate_settings(index: FaissIndex) -> list[list[str]]:
    """Families of settings, each from cheapest to most accurate (recall grows along a family)."""
    kind = index.index_type
    nlist = ivf_nlist(kind)
    if nlist:
        probes = [f"nprobe={2**i}" for i in range(int(np.log2(nlist)) + 1)]
        if kind.endswith("RFlat"):
            return [[f"{p},k_factor_rf={f}" for p in probes] for f in (1, 2, 4, 8)]
        return [probes]
    if kind.startswith("HNSW"):
        return [[f"efSearch={2**i}" for i in range(4, 11)]]
    return []


def measure(index: FaissIndex, params: str, queries: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(recall@k against `truth`, batched queries/s) of `index` searched with `params` (left set)."""
    k = truth.shape[1]
    index.set_search_params(params)
    index.search(queries[:10], k)  # warm
    start = time.perf_counter()
    _, found = index.search(queries, k)
    seconds = time.perf_counter() - start
    recall = float(np.mean([len(np.intersect1d(f, t)) / k for f, t in zip(found, truth, strict=True)]))
    return recall, len(queries) / max(seconds, 1e-9)


def tune_search_params(
    index: FaissIndex, queries: np.ndarray, truth: np.ndarray, target: float, k: int
) -> OperatingPoint | None:
    """The fastest setting reaching `target` recall@k (None for an exact index: nothing to tune).
    Leaves `index` set to it."""
    families = candidate_settings(index)
    if not families:
        return None
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    measured: list[tuple[str, float, float]] = []
    for family in families:
        best_here, flat = 0.0, 0
        for params in family:  # along a family recall grows and speed falls: stop at the first that reaches
            recall, qps = measure(index, params, queries, truth)
            measured.append((params, recall, qps))
            flat = flat + 1 if recall < best_here + PLATEAU else 0
            best_here = max(best_here, recall)
            if recall >= target or flat == 2:  # reached, or saturated (PQ codes cap it): more only costs time
                break
    reaching = [m for m in measured if m[1] >= target]
    reached = bool(reaching)
    if not reached:  # the most accurate, or as good within PLATEAU and faster
        best = max(m[1] for m in measured)
        reaching = [m for m in measured if m[1] >= best - PLATEAU]
    params, recall, qps = max(reaching, key=lambda m: m[2])
    index.set_search_params(params)
    return OperatingPoint(params, recall, qps, target, k, len(queries), reached)
