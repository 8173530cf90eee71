"""PCA whitening of local descriptors, fitted on a matcher's own gallery (`local.whiten`).

RootSIFT's dimensions are correlated and of very unequal variance, so nearest-neighbour distances
are dominated by a few directions that every stripe and patch of bark shares; whitening gives each
direction of the descriptor space unit variance before the search (Jegou & Chum, ECCV 2012, for
SIFT matching). Fitted without labels on the gallery the matcher searches, so a gallery of any
animal or place whitens itself and nothing is shipped or trained. On nyala train (RootSIFT,
LNBNN alone, protocol A, same flank, `local.spatial` 30, nsum) Recall@1 0.294 -> 0.338
(benchmarks/spatial_rescoring.py `--whiten`).

numpy's eigendecomposition is enough here: scikit-learn's PCA would do the same for one block, but
a joined family whitens each family's block of its descriptors apart, keeping the other block zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE = 200_000  # descriptors a whitening is fitted on at most (a seeded sample of the gallery's)
MIN_PER_DIM = 4  # fewer descriptors than this many per dimension: the block is left as it is
RUN = 64  # consecutive descriptors per sampled run (a few pages of a memory-mapped file)
FLOOR = 1e-3  # this share of the largest eigenvalue is added to each, so near-empty directions stay quiet


@dataclass(frozen=True)
class Block:
    """One part's whitening: descriptors of `part` have their columns [start, stop) mapped to
    (x - mean) @ projection."""

    part: int
    start: int
    stop: int
    mean: np.ndarray
    projection: np.ndarray


@dataclass(frozen=True)
class Whitening:
    blocks: tuple[Block, ...]

    def __call__(self, vectors: np.ndarray, parts: np.ndarray) -> np.ndarray:
        """Unit-length descriptors (float32, one row each; `parts[i]`: row i's family) whitened
        block by block and brought back to unit length, in place (a gallery's may be gigabytes)."""
        for b in self.blocks:
            rows = parts == b.part
            vectors[rows, b.start : b.stop] = (vectors[rows, b.start : b.stop] - b.mean) @ b.projection
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-7)
        return vectors


def fit_whitening(vectors: np.ndarray, parts: np.ndarray, bounds: list[tuple[int, int]]) -> Whitening:
    """The whitening of unit descriptors `vectors` whose part p lies in columns `bounds[p]`."""
    blocks = []
    for part, (start, stop) in enumerate(bounds):
        x = vectors[parts == part, start:stop].astype(np.float64)
        if len(x) < MIN_PER_DIM * (stop - start):
            continue  # too few to estimate a covariance: left unwhitened
        mean = x.mean(0)
        values, vectors_ = np.linalg.eigh(np.cov(x - mean, rowvar=False))
        scale = 1.0 / np.sqrt(np.maximum(values, 0.0) + FLOOR * values.max())
        blocks.append(Block(part, start, stop, mean.astype(np.float32), (vectors_ * scale).astype(np.float32)))
    return Whitening(tuple(blocks))


def sample_rows(total: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of at most SAMPLE of `total` descriptors, taken as seeded runs of RUN
    consecutive rows spread over the whole file: a memory-mapped gallery of 100k images then pages
    in ~SAMPLE / RUN places (tens of MB), not one page per sampled row (up to SAMPLE pages)."""
    if total <= SAMPLE:
        return np.arange(total)
    runs = np.sort(np.random.default_rng(seed).choice(total // RUN, SAMPLE // RUN, replace=False))
    return (runs[:, None] * RUN + np.arange(RUN)).ravel()
