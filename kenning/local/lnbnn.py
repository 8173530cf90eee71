"""LNBNN: local naive-Bayes nearest neighbour scoring of a query's descriptors against a gallery.

HotSpotter (Crall et al., WACV 2013) for individual animals: each query descriptor finds its K+1
nearest gallery descriptors; the (K+1)-th distance is the normaliser, and each of the first K
gives its image `normaliser - distance`, at most one vote per query descriptor per image; an
identity scores as its best image. A descriptor that matches every animal alike (grass, a fence)
scores nothing; one that matches a single animal much better than the rest scores high.

With `spatial` N, the N best images keep only the votes one similarity transform of the query
onto them explains, and the rest are dropped (HotSpotter's spatial verification; on nyala train
RootSIFT Recall@1 0.243 -> 0.258 at N=30, benchmarks/spatial_rescoring.py). With `identity_score`
nsum, an identity sums each query descriptor's best vote among its images instead of scoring as its
best image (HotSpotter's name scoring; WBIA's default).

One FAISS index over every gallery descriptor while they fit (`max_descriptors`); above that the
query is scored only against a shortlist of gallery images (the global embedding's nearest).
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

from kenning.local.featureset import FeatureSet, LocalFeatures, LocalScores, as_float, rows_by_id
from kenning.local.spatial import REPROJECTION_PX, consistent
from kenning.local.whitening import Whitening, fit_whitening, sample_rows

EXCLUDED_SLACK = 8  # extra neighbours fetched per query descriptor when some gallery images are excluded
FLAT_LIMIT = 200_000  # descriptors searched exactly up to this; IVF above (approximate, ~20x faster)
BLOCK = 100_000  # database descriptors per block of the exact search (a 1000-descriptor query: 400 MB)
NPROBE = 16


class LnbnnMatcher:
    """Scores queries against a gallery's local features; `labels[i]` is the identity of row i
    (the rows of `gallery`, then those of `tail`).

    The descriptors of `gallery` (an index's base) go into one search structure that `reuse` lets a
    later matcher share; the `tail` (enrolments) is searched apart, exactly, and `dead` rows
    (forgotten base images) are skipped. So an enrolment or a removal costs a search of the few new
    descriptors, not a rebuild of the base's (an IVF over 500k descriptors takes ~20 s to train on 2
    cores). The two are never concatenated: a memory-mapped base is read only where a query needs it.
    """

    def __init__(
        self,
        gallery: FeatureSet,
        labels: np.ndarray,
        k: int = 5,
        max_descriptors: int = 2_000_000,
        dead: np.ndarray | None = None,
        reuse: LnbnnMatcher | None = None,
        tail: FeatureSet | None = None,
        spatial: int = 0,
        identity_score: str = "best_image",
        tolerance: float = REPROJECTION_PX,
        whiten: bool = False,
    ):
        self.gallery = gallery
        self.spatial, self.tolerance = spatial, tolerance
        self.nsum = identity_score == "nsum"
        self.tail_set = tail if tail is not None and len(tail) else None
        self.ids, self.offsets = gallery.ids, gallery.offsets
        if self.tail_set is not None:  # global rows: the base's, then the tail's
            self.ids = np.concatenate([gallery.ids, self.tail_set.ids])
            self.offsets = np.concatenate([gallery.offsets, self.tail_set.offsets[1:] + gallery.offsets[-1]])
        self._order = np.argsort(self.ids, kind="stable")
        self.labels = np.asarray(labels, dtype=object).astype(str)
        self.codes, self.names = _codes(self.labels)
        self.sizes = gallery.sizes if self.tail_set is None else np.concatenate([gallery.sizes, self.tail_set.sizes])
        self.k = k
        self.whitening: Whitening | None = None
        if whiten:
            shared = reuse is not None and reuse.whitening is not None and _same_base(reuse, gallery)
            self.whitening = reuse.whitening if shared else self._fit_whitening()
        self.dead_rows = np.asarray(dead if dead is not None else [], np.int64)
        self.indexed = gallery.descriptor_count  # descriptors in the shared structure
        self.descriptor_count = int(self.offsets[-1])
        self.index: _Exact | _Approximate | None = None
        self.tail: _Exact | None = None
        if 0 < self.descriptor_count <= max_descriptors:
            if reuse is not None and reuse.index is not None and _same_base(reuse, gallery):
                self.index = reuse.index
            elif self.indexed:
                self.index = _build(self.vectors(gallery.descriptors))
            if self.tail_set is not None and self.tail_set.descriptor_count:
                self.tail = _Exact(self.vectors(self.tail_set.descriptors))
        self.searchable = self.index is not None or self.tail is not None

    def vectors(self, descriptors: np.ndarray) -> np.ndarray:
        """Stored descriptors -> the unit vectors searched (whitened with `whiten`)."""
        x = as_float(descriptors)
        return x if self.whitening is None else self.whitening(x, self.parts(descriptors))

    def bounds(self, dim: int) -> list[tuple[int, int]]:
        """The columns each part's descriptors occupy (one family: all of them)."""
        return [(0, dim)]

    def _fit_whitening(self) -> Whitening:
        """The whitening of a seeded sample of the base's descriptors (the enrolments' when the base
        has none): fitted once per base, kept when a matcher reuses the base's structure."""
        source = self.gallery if self.gallery.descriptor_count or self.tail_set is None else self.tail_set
        raw = source.descriptors[sample_rows(source.descriptor_count)]
        return fit_whitening(as_float(raw), self.parts(raw), self.bounds(raw.shape[1]))

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row of each gallery id, -1 where there is none."""
        return rows_by_id(self.ids, self._order, ids)

    def descriptors(self, positions: np.ndarray) -> np.ndarray:
        """Stored descriptors at global positions (base, then tail): read from the base's file only there."""
        return self._rows_at("descriptors", positions)

    def _rows_at(self, field: str, positions: np.ndarray) -> np.ndarray:
        base_rows, base = getattr(self.gallery, field), positions < self.indexed
        if base.all():
            return base_rows[positions]
        out = np.empty((len(positions), base_rows.shape[1]), base_rows.dtype)
        out[base] = base_rows[positions[base]]
        out[~base] = getattr(self.tail_set, field)[positions[~base] - self.indexed]
        return out

    def score(
        self, query: LocalFeatures, exclude: np.ndarray | None = None, candidates: np.ndarray | None = None
    ) -> LocalScores:
        """LNBNN scores of one query. `exclude`: gallery ids it must not match (itself, its own
        sighting). `candidates`: gallery ids to score against when the gallery is too large for one
        index of its descriptors."""
        rows_out = self.rows_of(np.asarray(exclude if exclude is not None else [], np.int64))
        rows_out = np.union1d(rows_out[rows_out >= 0], self.dead_rows)
        if len(query) == 0 or self.descriptor_count == 0:
            return _empty()
        x = self.vectors(query.descriptors)
        width = self.k + 1
        if self.searchable:
            dist, pos = self._search(x, width, _positions(self.offsets, rows_out))
        else:
            rows = self.rows_of(np.asarray(candidates if candidates is not None else [], np.int64))
            rows = np.setdiff1d(rows[rows >= 0], rows_out)
            picked = _positions(self.offsets, rows)
            if len(picked) == 0:
                return _empty()
            dist, local = _search(_build(self.vectors(self.descriptors(picked)), exact=True), x, width, None)
            pos = np.where(local >= 0, picked[np.maximum(local, 0)], -1)
        return self._vote(np.sqrt(np.maximum(dist, 0)), pos, self.parts(query.descriptors), query.keypoints)

    def _search(self, x: np.ndarray, width: int, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The `width` nearest over the shared structure and the tail together."""
        parts = []
        if self.index is not None:
            parts.append(_search(self.index, x, width, excluded[excluded < self.indexed]))
        if self.tail is not None:
            dist, pos = _search(self.tail, x, width, excluded[excluded >= self.indexed] - self.indexed)
            parts.append((dist, np.where(pos >= 0, pos + self.indexed, -1)))
        if len(parts) == 1:
            return parts[0]
        dist = np.concatenate([np.where(p >= 0, d, np.inf) for d, p in parts], axis=1)
        pos = np.concatenate([p for _, p in parts], axis=1)
        order = np.argsort(dist, axis=1, kind="stable")[:, :width]
        return np.take_along_axis(dist, order, 1), np.take_along_axis(pos, order, 1)

    def parts(self, descriptors: np.ndarray) -> np.ndarray:
        """Which part of the evidence each query descriptor is (one family: all part 0); an identity
        scores as the sum over parts of its best image's score in that part."""
        return np.zeros(len(descriptors), np.int64)

    def _vote(self, dist: np.ndarray, pos: np.ndarray, part: np.ndarray, keypoints: np.ndarray) -> LocalScores:
        valid = pos >= 0
        enough = valid.sum(1) >= 2  # a normaliser and at least one match
        dist, pos, valid = dist[enough], pos[enough], valid[enough]
        query_kp = np.flatnonzero(enough)
        if len(dist) == 0:
            return _empty()
        last = valid.sum(1) - 1  # the normaliser: the K+1-th neighbour, or the last one found
        norm = dist[np.arange(len(dist)), last]
        owner = np.searchsorted(self.offsets, np.maximum(pos, 0), side="right") - 1  # descriptor -> row
        rows = np.where(valid, owner, -1)
        voting = valid & (np.arange(dist.shape[1])[None, :] < last[:, None])
        gain = np.where(voting, norm[:, None] - dist, 0.0)
        first_image = voting & _first_occurrence(rows)
        if self.spatial:
            first_image = self._consistent(first_image, rows, pos, gain, keypoints[query_kp, :2])
        # An identity scores as its best image (per part): a sum over its images would favour
        # identities with many photos (a catalogue's first sighting against a gallery's dozens).
        image_scores, label_scores = np.zeros(len(self.ids)), np.zeros(len(self.names))
        for p in np.unique(part[query_kp]):
            voted = first_image & (part[query_kp] == p)[:, None]
            in_part = np.bincount(rows[voted], gain[voted], minlength=len(self.ids))
            image_scores += in_part
            if not self.nsum:
                best = np.zeros(len(self.names))
                np.maximum.at(best, self.codes, in_part)
                label_scores += best
        if self.nsum:
            q, j = np.nonzero(first_image)
            label_scores = _nsum(q, self.codes[rows[q, j]], gain[q, j], len(self.names))
        scored_images = np.flatnonzero(image_scores > 0)
        scored_images = scored_images[np.argsort(-image_scores[scored_images], kind="stable")]
        scored_labels = np.flatnonzero(label_scores > 0)
        scored_labels = scored_labels[np.argsort(-label_scores[scored_labels], kind="stable")]
        matches = {}
        for row in scored_images[:3]:  # what a report draws: the pairs behind the best images
            hit = first_image & (rows == row)
            q, j = np.nonzero(hit)
            matches[int(self.ids[row])] = np.stack([query_kp[q], pos[q, j] - self.offsets[row]], 1)
        return LocalScores(
            self.ids[scored_images],
            image_scores[scored_images],
            [str(self.names[c]) for c in scored_labels],
            label_scores[scored_labels],
            matches,
        )

    def _consistent(
        self, votes: np.ndarray, rows: np.ndarray, pos: np.ndarray, gain: np.ndarray, query_xy: np.ndarray
    ) -> np.ndarray:
        """The votes of the `spatial` best-scoring images that one similarity transform of the
        query onto that image explains (HotSpotter's spatial verification: LNBNN is re-scored from
        the inliers alone); every other image's votes are dropped, so an image unchecked never
        outranks one checked."""
        image_scores = np.bincount(rows[votes], gain[votes], minlength=len(self.ids))
        top = np.argsort(-image_scores, kind="stable")[: self.spatial]
        kept = np.zeros_like(votes)
        for row in top[image_scores[top] > 0]:
            q, j = np.nonzero(votes & (rows == row))
            gallery_xy, side = self._rows_at("keypoints", pos[q, j])[:, :2], float(self.sizes[row].max())
            inlier = consistent(query_xy[q], gallery_xy, side, self.tolerance)
            kept[q[inlier], j[inlier]] = True
        return kept


def _same_base(other: LnbnnMatcher, gallery: FeatureSet) -> bool:
    """Whether `other`'s shared structure holds exactly the descriptors of `gallery` (ids are never
    reused, so the same ids in the same order are the same features)."""
    return other.gallery is gallery or (
        np.array_equal(other.gallery.ids, gallery.ids) and np.array_equal(other.gallery.offsets, gallery.offsets)
    )


def _codes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    names, codes = np.unique(labels, return_inverse=True) if len(labels) else (np.zeros(0, object), np.zeros(0, int))
    return codes.astype(np.int64), names


def _nsum(query_rows: np.ndarray, codes: np.ndarray, gains: np.ndarray, identities: int) -> np.ndarray:
    """HotSpotter's name scoring: each query descriptor gives an identity its best vote among that
    identity's images, and the identity sums them. Several photos of an animal can then each explain
    a different part of the query, while one descriptor still counts once per identity."""
    key = query_rows.astype(np.int64) * identities + codes
    order = np.lexsort((-gains, key))  # per (descriptor, identity), the best vote first
    key, codes, gains = key[order], codes[order], gains[order]
    best = np.ones(len(key), bool)  # no vote at all (every one dropped): every identity scores 0
    best[1:] = key[1:] != key[:-1]
    return np.bincount(codes[best], gains[best], minlength=identities)


def _first_occurrence(values: np.ndarray) -> np.ndarray:
    """True where a row's value did not occur earlier in that row (columns are few: K)."""
    first = np.ones(values.shape, bool)
    for j in range(1, values.shape[1]):
        first[:, j] = ~(values[:, :j] == values[:, j : j + 1]).any(1)
    return first


def _positions(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    spans = [np.arange(offsets[r], offsets[r + 1]) for r in rows]
    return np.concatenate(spans).astype(np.int64) if spans else np.zeros(0, np.int64)


class _Exact:
    """Exact k-NN by matrix product and top-k in torch, in blocks of the database. FAISS's flat
    index does the same but its top-k selection measured 5x slower here (445 x 155k descriptors:
    4.6 s vs 0.8 s on 2 cores)."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = torch.from_numpy(np.ascontiguousarray(vectors, np.float32))
        self.ntotal = len(vectors)

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        best_sim, best_pos = [], []
        for start in range(0, self.ntotal, BLOCK):
            sim = q @ self.vectors[start : start + BLOCK].T
            top = sim.topk(min(k, sim.shape[1]), dim=1)
            best_sim.append(top.values)
            best_pos.append(top.indices + start)
        sim, pos = torch.cat(best_sim, 1), torch.cat(best_pos, 1)
        top = sim.topk(min(k, sim.shape[1]), dim=1)
        dist = (2.0 - 2.0 * top.values).clamp(min=0)  # unit vectors: squared L2 from the inner product
        return dist.numpy(), pos.gather(1, top.indices).numpy()


class _Approximate:
    """FAISS IVF over many descriptors (`nprobe` lists searched)."""

    def __init__(self, vectors: np.ndarray):
        lists = int(4 * np.sqrt(len(vectors)))
        dim = vectors.shape[1]
        self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, lists)
        self.index.train(vectors[np.random.default_rng(0).permutation(len(vectors))[: 64 * lists]])
        self.index.add(vectors)
        self.index.nprobe = NPROBE
        self.ntotal = len(vectors)

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(x)
        dist, pos = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
        # The SWIG call itself: pytorch-metric-learning imports faiss.contrib.torch_utils, which replaces
        # Index.search with a wrapper of its own.
        self.index.search_c(n, faiss.swig_ptr(np.ascontiguousarray(x)), k, faiss.swig_ptr(dist), faiss.swig_ptr(pos))
        return dist, pos


def _build(vectors: np.ndarray, exact: bool = False) -> _Exact | _Approximate:
    return _Exact(vectors) if exact or len(vectors) <= FLAT_LIMIT else _Approximate(vectors)


def _search(
    index: _Exact | _Approximate, x: np.ndarray, k: int, excluded: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances and positions of the k nearest, skipping descriptor positions `excluded`
    (searched and dropped: EXCLUDED_SLACK more are fetched). A row crowded by excluded neighbours
    keeps fewer (its normaliser is then its last one)."""
    extra = EXCLUDED_SLACK if excluded is not None and len(excluded) else 0
    dist, pos = index.search(x, min(k + extra, index.ntotal))
    if extra:
        drop = np.isin(pos, excluded) | (pos < 0)
        dist, pos = np.where(drop, np.inf, dist), np.where(drop, -1, pos)
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        dist, pos = np.take_along_axis(dist, order, 1), np.take_along_axis(pos, order, 1)
    return dist, pos


def _empty() -> LocalScores:
    return LocalScores(np.zeros(0, np.int64), np.zeros(0), [], np.zeros(0), {})


MATCHER = LnbnnMatcher  # registry.MATCHERS['lnbnn']
