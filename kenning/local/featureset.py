"""Local features of many images in flat arrays: what an index directory stores beside its vectors.

One `.npz` file per set (the gallery's bulk, the enrolments since); image i owns descriptors
[offsets[i], offsets[i + 1]). Ids are the gallery ids of the vector index, so forgetting an image
(a tombstone) and compaction apply to both stages alike. Descriptors have the size and dtype of
their family's `Layout` (SIFT: 128 uint8); a set is checked against it when loaded or extended.

The per-descriptor arrays of a loaded set are memory-mapped from the file (np.savez stores members
uncompressed, so each is one contiguous run of bytes): a 100k-image gallery's 8 GB stay on disk and
a query reads the pages of its shortlist only. Nothing here copies them whole.
"""

from __future__ import annotations

import mmap
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from kenning.atomic import atomic_save
from kenning.errors import KenningError, first_line

FIELDS = ("ids", "offsets", "keypoints", "descriptors", "weights", "foreground", "sizes")
MAPPED = ("keypoints", "descriptors", "weights")  # one row per descriptor: read from disk as needed


@dataclass(frozen=True)
class Layout:
    """A family's descriptors: their size and how they are stored."""

    dim: int
    dtype: str  # a numpy dtype name: uint8, float16, float32

    def check(self, descriptors: np.ndarray, what: str) -> None:
        if descriptors.ndim != 2 or descriptors.shape[1] != self.dim or descriptors.dtype != np.dtype(self.dtype):
            raise KenningError(
                f"{what} hold {descriptors.dtype} descriptors of shape {descriptors.shape}, not {self.dim} {self.dtype}"
            )


@dataclass
class LocalFeatures:
    """Local features of one image."""

    keypoints: np.ndarray  # (n, 4) float32: x, y, scale, angle (degrees) in original pixels
    descriptors: np.ndarray  # (n, layout.dim) of layout.dtype (SIFT: RootSIFT x 255, uint8)
    weights: np.ndarray  # (n,) float32: foreground weight at each keypoint
    foreground: np.ndarray  # (h, w) float16: the image's foreground map
    size: tuple[int, int]  # (width, height) of the original image

    def __len__(self) -> int:
        return len(self.descriptors)


@dataclass
class LocalScores:
    """One query's local scores against a gallery (what a matcher returns)."""

    image_ids: np.ndarray  # gallery ids that scored, best first
    image_scores: np.ndarray
    labels: list[str]  # identities that scored, best first
    label_scores: np.ndarray
    matches: dict[int, np.ndarray]  # gallery id -> (m, 2) pairs (query keypoint, gallery keypoint) that voted


def as_float(descriptors: np.ndarray) -> np.ndarray:
    """Stored descriptors -> unit-length float32 vectors for search."""
    d = descriptors.astype(np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-7)


@dataclass
class FeatureSet:
    ids: np.ndarray  # (m,) int64 gallery ids
    offsets: np.ndarray  # (m + 1,) int64
    keypoints: np.ndarray  # (n, 4) float32: x, y, scale, angle
    descriptors: np.ndarray  # (n, layout.dim) of layout.dtype
    weights: np.ndarray  # (n,) float16 foreground weight of each keypoint
    foreground: np.ndarray  # (m, h, w) float16 foreground maps
    sizes: np.ndarray  # (m, 2) int32 width, height

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def descriptor_count(self) -> int:
        return int(self.offsets[-1])

    @classmethod
    def empty(cls, layout: Layout, map_shape: tuple[int, ...] = (12, 12)) -> FeatureSet:
        return cls(
            np.zeros(0, np.int64),
            np.zeros(1, np.int64),
            np.zeros((0, 4), np.float32),
            np.zeros((0, layout.dim), layout.dtype),
            np.zeros(0, np.float16),
            np.zeros((0, *map_shape), np.float16),
            np.zeros((0, 2), np.int32),
        )

    @classmethod
    def of(cls, ids: Sequence[int], features: Sequence[LocalFeatures], layout: Layout) -> FeatureSet:
        """One set of the images' features; each must have `layout` (features of another family
        are refused, never cast)."""
        if not features:
            return cls.empty(layout)
        for f in features:
            layout.check(f.descriptors, "local features")
        counts = [len(f) for f in features]
        return cls(
            np.asarray(ids, np.int64),
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            np.concatenate([f.keypoints for f in features]).astype(np.float32),
            np.concatenate([f.descriptors for f in features]),
            np.concatenate([f.weights for f in features]).astype(np.float16),
            np.stack([f.foreground for f in features]).astype(np.float16),
            np.array([f.size for f in features], np.int32),
        )

    def image(self, row: int) -> LocalFeatures:
        a, b = self.offsets[row], self.offsets[row + 1]
        return LocalFeatures(
            self.keypoints[a:b],
            self.descriptors[a:b],
            self.weights[a:b].astype(np.float32),
            self.foreground[row],
            (int(self.sizes[row, 0]), int(self.sizes[row, 1])),
        )

    @cached_property
    def _order(self) -> np.ndarray:  # the rows by id, sorted once: a 100k-image base is looked up per candidate
        return np.argsort(self.ids, kind="stable")

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row of each gallery id, -1 where this set has none."""
        return rows_by_id(self.ids, self._order, ids)

    def select(self, keep: np.ndarray) -> FeatureSet:
        """The images whose row is in boolean mask `keep` (this set itself when that is all)."""
        if np.all(keep):
            return self
        rows = np.flatnonzero(keep)
        spans = [np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows]
        picked = np.concatenate(spans) if spans else np.zeros(0, np.int64)
        counts = np.diff(self.offsets)[rows]
        return FeatureSet(
            self.ids[rows],
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            self.keypoints[picked],
            self.descriptors[picked],
            self.weights[picked],
            self.foreground[rows],
            self.sizes[rows],
        )

    def save(self, path: Path) -> None:
        def write(target: Path) -> None:
            with open(target, "wb") as fh:  # a file object: np.savez would append .npz to a path
                np.savez(fh, **{f: getattr(self, f) for f in FIELDS})

        atomic_save(path, write)

    @classmethod
    def load(cls, path: Path, layout: Layout, mmap: bool = False) -> FeatureSet:
        """Read and check a stored set of `layout`, its per-descriptor arrays memory-mapped with
        `mmap` (read-only); a damaged or foreign file is one line naming it."""
        try:
            with np.load(path, allow_pickle=False) as data:
                mapped = _mapped(path, MAPPED) if mmap else {}
                arrays = {f: mapped[f] if f in mapped else data[f] for f in FIELDS}
        except FileNotFoundError:
            raise
        except Exception as exc:  # zipfile, numpy and KeyError for a file that is not ours
            raise KenningError(f"local features {path} are damaged: {first_line(exc)}") from None
        fs = cls(**arrays)
        m, n = len(fs.ids), len(fs.descriptors)
        consistent = (
            fs.offsets.shape == (m + 1,)
            and (m == 0 or (fs.offsets[0] == 0 and fs.offsets[-1] == n and np.all(np.diff(fs.offsets) >= 0)))
            and fs.descriptors.shape == (n, layout.dim)
            and fs.descriptors.dtype == np.dtype(layout.dtype)
            and fs.keypoints.shape == (n, 4)
            and fs.weights.shape == (n,)
            and len(fs.foreground) == m
            and fs.sizes.shape == (m, 2)
        )
        if not consistent:
            raise KenningError(f"local features {path} are damaged: array shapes do not agree")
        return fs


def rows_by_id(ids: np.ndarray, order: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each `wanted` id among `ids` (`order`: their argsort), -1 where there is none."""
    wanted = np.asarray(wanted, np.int64)
    if not len(order):
        return np.full(len(wanted), -1, np.int64)
    pos = np.minimum(np.searchsorted(ids[order], wanted), len(order) - 1)
    return np.where(ids[order[pos]] == wanted, order[pos], -1)


def _mapped(path: Path, fields: Sequence[str]) -> dict[str, np.ndarray]:
    """Read-only memory maps of the uncompressed members `fields` of an .npz file. numpy's np.load
    maps only a bare .npy, so the member's data offset is read from its zip and .npy headers.
    The map is advised random access: queries read a few shortlisted images' rows, and the
    kernel's readahead (8 MB per fault on a virtio disk) would otherwise page in the whole file."""
    out = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as fh:
        whole = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        if hasattr(mmap, "MADV_RANDOM"):  # Linux and macOS
            whole.madvise(mmap.MADV_RANDOM)
        for field in fields:
            info = archive.getinfo(f"{field}.npy")
            if info.compress_type != zipfile.ZIP_STORED:
                continue  # a compressed member (not ours, but valid): read whole by np.load
            fh.seek(info.header_offset)
            local = fh.read(30)
            if local[:4] != b"PK\x03\x04":
                raise ValueError(f"no zip entry at the offset of {field}")
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            fh.seek(info.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(fh)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = header(fh)
            if dtype.hasobject:
                raise ValueError(f"{field} holds objects")
            if np.prod(shape) == 0:
                out[field] = np.zeros(shape, dtype)
                continue
            order = "F" if fortran else "C"
            count = int(np.prod(shape))
            flat = np.frombuffer(whole, dtype=dtype, count=count, offset=fh.tell())
            out[field] = flat.reshape(shape, order=order)
    return out


def concat(sets: Sequence[FeatureSet], layout: Layout, map_shape: tuple[int, ...] = (12, 12)) -> FeatureSet:
    """One set of several; a single non-empty one is returned as it is (a mapped base stays mapped)."""
    sets = [s for s in sets if len(s)]
    if not sets:
        return FeatureSet.empty(layout, map_shape)
    if len(sets) == 1:
        return sets[0]
    counts = np.concatenate([np.diff(s.offsets) for s in sets])
    return FeatureSet(
        np.concatenate([s.ids for s in sets]),
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        np.concatenate([s.keypoints for s in sets]),
        np.concatenate([s.descriptors for s in sets]),
        np.concatenate([s.weights for s in sets]),
        np.concatenate([s.foreground for s in sets]),
        np.concatenate([s.sizes for s in sets]),
    )
