"""Top-k over neighbour lists searched separately, with entries a query must not match dropped."""

from __future__ import annotations

import numpy as np


def select_top(
    sims: np.ndarray,
    ids: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
    removed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best `k` columns per row by similarity; ids < 0, ids in `removed` and `exclude[i]` (query i's
    own id, or a row of ids such as its own sighting's, -1 padded) are dropped and padded with
    similarity -inf, id -1."""
    drop = ids < 0
    if removed is not None and len(removed):
        drop |= np.isin(ids, removed)
    if exclude is not None:
        exclude = np.asarray(exclude)
        exclude = exclude[:, None] if exclude.ndim == 1 else exclude
        drop |= (ids[:, :, None] == exclude[:, None, :]).any(-1)
    sims = np.where(drop, -np.inf, sims)
    ids = np.where(drop, -1, ids)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
