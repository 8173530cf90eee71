"""Search restricted to compatible viewpoints (data/metadata.py): a left flank is looked for among
left flanks (and photos of unknown viewpoint), never among right ones.

The global stage searches wider until each query has its k compatible neighbours (or the gallery
is exhausted): a query's cost grows with the share of the gallery it may not match, not with the
gallery. The local stage gets a matcher over the compatible images' features only (recognizer.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kenning.data.metadata import UNKNOWN
from kenning.index.gallery import GalleryIndex

WIDER = 4  # each round searches this many times more neighbours


def compatible_mask(
    views: Sequence[str], gallery_views: np.ndarray, pairs: frozenset[tuple[str, str]] = frozenset()
) -> np.ndarray:
    """(n, m) whether query i (viewpoint views[i]) may match the gallery image of gallery_views[i, j]."""
    query = np.asarray(views, dtype=object)[:, None]
    ok = (query == UNKNOWN) | (gallery_views == UNKNOWN) | (gallery_views == query)
    if pairs:
        ok |= np.vectorize(lambda q, g: (q, g) in pairs, otypes=[bool])(query, gallery_views)
    return ok


def search_compatible(
    index: GalleryIndex,
    vectors: np.ndarray,
    k: int,
    views: Sequence[str],
    pairs: frozenset[tuple[str, str]] = frozenset(),
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (similarities, ids) among the gallery images compatible with each query's viewpoint;
    -inf / -1 padded where fewer exist."""
    total = len(index)
    width = min(total, WIDER * k)
    while True:
        sims, ids = index.search(vectors, max(width, 1), exclude)
        ok = (ids >= 0) & compatible_mask(views, index.column_of(ids, "viewpoint"), pairs)
        if width >= total or (ok.sum(axis=1) >= k).all():
            break
        width = min(total, width * WIDER)
    order = np.argsort(~ok, axis=1, kind="stable")[:, :k]  # compatible first, in their order
    kept = np.take_along_axis(ok, order, 1)
    sims = np.where(kept, np.take_along_axis(sims, order, 1), -np.inf).astype(np.float32)
    ids = np.where(kept, np.take_along_axis(ids, order, 1), -1)
    return _pad(sims, ids, k)


def _pad(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if sims.shape[1] >= k:
        return sims, ids
    missing = k - sims.shape[1]
    return (
        np.pad(sims, ((0, 0), (0, missing)), constant_values=-np.inf),
        np.pad(ids, ((0, 0), (0, missing)), constant_values=-1),
    )


def filters(views: Sequence[str] | None, index: GalleryIndex, mode: str) -> bool:
    """Whether viewpoints restrict this search: `mode` (index.viewpoints) says so, a query has one,
    the gallery has some."""
    return views is not None and mode == "compatible" and any(v != UNKNOWN for v in views) and index.has_viewpoints
