"""The index directory: a bulk index, a side index of enrolments, tombstones, labels, one manifest.

Layout (G is a generation number; a manifest names the files of its generation):
- `base-G.faiss` / `base-G.ann`: the bulk of the gallery, written by `build-index` and `--compact`;
- `base-G.parquet`: its label table (id, image_id, label, path, enrolled_at);
- `delta-G.parquet`: enrolments since, rows with their vectors (searched exactly in memory);
- `removed-G.npy`: ids of base entries forgotten since;
- `manifest.json`: model fingerprint, embedding size, backend, counts, threshold, file names.

Enroll and forget write only the small files, so they take milliseconds at a million images
(rewriting a 2 GB base per enrolment would take seconds) and work for Annoy, which cannot add
or remove after building. Every write goes to new files and commits by renaming the manifest,
under an exclusive lock: a crash leaves the old index, two writers never lose each other's rows.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kenning.atomic import atomic_save, atomic_save_array, atomic_write_json
from kenning.config import IndexConfig
from kenning.embeddings.checkpoint import ModelManifest
from kenning.errors import KenningError, first_line
from kenning.index.backend import SUFFIX, VectorIndex, create_index, load_index
from kenning.index.faiss_index import FaissIndex
from kenning.index.lock import index_lock
from kenning.index.topk import select_top
from kenning.manifests import read_manifest

FORMAT = "kenning-index/2"
MANIFEST = "manifest.json"
TABLE_COLUMNS = ["id", "image_id", "label", "path", "enrolled_at"]
GENERATION_PREFIXES = ("base-", "delta-", "removed-")


@dataclass
class IndexManifest:
    model_fingerprint: str
    model_dir: str
    backbone: str
    embedding_dim: int
    backend: str
    index_type: str
    search_params: str
    unknown_label: str
    k: int
    power: float
    flip_tta: bool
    threshold: float | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    count: int = 0  # images answerable: base - removed + delta
    next_id: int = 0  # ids are never reused, so a forgotten id cannot come back as another image
    generation: int = 0
    base_file: str = ""
    base_table: str = ""
    delta_file: str = ""
    removed_file: str = ""
    format: str = FORMAT


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "id" else str) for c in TABLE_COLUMNS})


@dataclass
class Delta:
    """Enrolments since the base was built: their rows and vectors."""

    table: pd.DataFrame
    vectors: np.ndarray


class GalleryIndex:
    """The in-memory view of an index directory: search over base + side index, minus tombstones."""

    def __init__(
        self,
        manifest: IndexManifest,
        base: VectorIndex,
        base_table: pd.DataFrame,
        delta: Delta | None = None,
        removed: np.ndarray | None = None,
    ):
        self.manifest = manifest
        self.base = base
        self.base_table = base_table.reset_index(drop=True)
        self._set_changes(
            delta or Delta(empty_table(), np.zeros((0, manifest.embedding_dim), np.float32)),
            np.zeros(0, np.int64) if removed is None else removed,
        )

    @classmethod
    def new(cls, model: ModelManifest, model_dir: str | Path, cfg: IndexConfig, size: int) -> GalleryIndex:
        """An empty index for about `size` images; `cfg.index_type` auto picks the structure by size."""
        base = create_index(cfg.backend, model.embedding_dim, size, cfg.index_type, cfg.search_params)
        manifest = IndexManifest(
            model_fingerprint=model.fingerprint,
            model_dir=str(Path(model_dir).resolve()),
            backbone=model.backbone,
            embedding_dim=model.embedding_dim,
            backend=cfg.backend,
            index_type=base.index_type,
            search_params=base.search_params,
            unknown_label=cfg.unknown_label,
            k=cfg.k,
            power=cfg.power,
            flip_tta=cfg.flip_tta,
            threshold=cfg.threshold,
        )
        return cls(manifest, base, empty_table())

    def __len__(self) -> int:
        return len(self.table)

    @property
    def table(self) -> pd.DataFrame:
        """Every answerable image: base rows not forgotten, then enrolments."""
        return self._table

    def add(
        self, vectors: np.ndarray, image_ids: list[str], labels: list[str], paths: list[str], progress: bool = False
    ) -> np.ndarray:
        """Add to the bulk index (building a gallery); enrolments into a saved index go through `enroll`."""
        _check_dim(vectors, self.manifest.embedding_dim)
        ids = np.arange(self.manifest.next_id, self.manifest.next_id + len(vectors), dtype=np.int64)
        self.base.add(vectors, ids, progress=progress)
        self.base_table = _concat(self.base_table, _rows(ids, image_ids, labels, paths))
        self.manifest.next_id += len(vectors)
        self._set_changes(self.delta, self.removed)
        return ids

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarities, ids) over base and side index, forgotten entries skipped; -inf / -1 pad.

        `exclude[i]` is an id query i must not match (itself, for leave-one-out), or -1.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        extra = 1 if exclude is not None else 0
        parts = []
        if self.base.ntotal:  # over-fetch by the tombstones that may crowd the top
            parts.append(self.base.search(queries, min(k + len(self.removed) + extra, self.base.ntotal)))
        if self._delta_index.ntotal:
            parts.append(self._delta_index.search(queries, k + extra))
        width = max(1, min(k, len(self)))
        if not parts:
            return np.full((len(queries), width), -np.inf, np.float32), np.full((len(queries), width), -1, np.int64)
        sims = np.concatenate([p[0] for p in parts], axis=1)
        ids = np.concatenate([p[1] for p in parts], axis=1)
        return select_top(sims, ids, width, exclude, self.removed)

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors (decoded for PQ) of live ids."""
        out = np.zeros((len(ids), self.manifest.embedding_dim), dtype=np.float32)
        in_delta = pd.Index(self.delta.table["id"].to_numpy(np.int64)).get_indexer(ids)
        out[in_delta >= 0] = self.delta.vectors[in_delta[in_delta >= 0]]
        if (in_delta < 0).any():
            out[in_delta < 0] = self.base.reconstruct(np.asarray(ids)[in_delta < 0])
        return out

    def labels_of(self, ids: np.ndarray) -> np.ndarray:
        rows = self._row_of.get_indexer(ids.ravel())
        out = np.where(rows >= 0, self._labels[np.maximum(rows, 0)] if len(self._labels) else "", "")
        return out.reshape(ids.shape)

    def paths_of(self, ids: np.ndarray) -> np.ndarray:
        """Source image path of each id ("" for none): what reports show as thumbnails."""
        rows = self._row_of.get_indexer(ids.ravel())
        paths = self._table["path"].to_numpy(dtype=object)
        out = np.where(rows >= 0, paths[np.maximum(rows, 0)] if len(paths) else "", "")
        return out.reshape(ids.shape)

    def ids_of_images(self, image_ids: list[str]) -> np.ndarray:
        """Index id of each image id, -1 for those not in the gallery."""
        lookup = pd.Series(self.table["id"].to_numpy(), index=self.table["image_id"].to_numpy())
        lookup = lookup[~lookup.index.duplicated(keep="first")]
        return lookup.reindex(image_ids).fillna(-1).to_numpy(dtype=np.int64)

    def label_counts(self) -> pd.Series:
        return self.table["label"].value_counts()

    def check_model(self, model: ModelManifest) -> None:
        check_model(self.manifest, model)

    def set_search_params(self, search_params: str) -> None:
        self.base.set_search_params(search_params)
        self.manifest.search_params = search_params

    def save(self, directory: str | Path, progress: bool = False) -> None:
        """Write everything as a new generation (after building); enrolments and removals are kept."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with index_lock(directory):
            self._save_locked(directory, progress)

    def _save_locked(self, directory: Path, progress: bool) -> None:
        gen = _next_generation(directory, self.manifest)
        base_file = f"base-{gen}{SUFFIX[self.manifest.backend]}"
        self.base.save(directory / base_file, progress=progress)
        atomic_save(directory / f"base-{gen}.parquet", lambda p: self.base_table.to_parquet(p, index=False))
        _write_delta(directory / f"delta-{gen}.parquet", self.delta)
        atomic_save_array(directory / f"removed-{gen}.npy", self.removed)
        self.manifest = dataclasses.replace(
            self.manifest,
            generation=gen,
            count=len(self),
            base_file=base_file,
            base_table=f"base-{gen}.parquet",
            delta_file=f"delta-{gen}.parquet",
            removed_file=f"removed-{gen}.npy",
        )
        _commit(directory, self.manifest)

    @classmethod
    def load(cls, directory: str | Path) -> GalleryIndex:
        directory = Path(directory)
        for attempt in range(5):  # a concurrent writer may delete the files of the manifest just read
            manifest = read_index_manifest(directory)
            try:
                return cls._load(directory, manifest)
            except FileNotFoundError:
                if attempt == 4 or read_index_manifest(directory).generation == manifest.generation:
                    raise KenningError(f"index {directory} is damaged: files of its manifest are missing") from None
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def refresh(self, directory: str | Path) -> None:
        """Catch up with what other processes committed: enrolments and removals, or a new base."""
        directory = Path(directory)
        manifest = read_index_manifest(directory)
        if manifest.base_file != self.manifest.base_file:
            fresh = GalleryIndex.load(directory)
            self.__dict__.update(fresh.__dict__)
            return
        self.manifest = manifest
        self._set_changes(_read_delta(directory, manifest), _read_array(directory / manifest.removed_file))

    @classmethod
    def _load(cls, directory: Path, manifest: IndexManifest) -> GalleryIndex:
        try:
            base = load_index(
                manifest.backend,
                directory / manifest.base_file,
                manifest.embedding_dim,
                manifest.index_type,
                manifest.search_params,
            )
            base_table = pd.read_parquet(directory / manifest.base_table)
            delta = _read_delta(directory, manifest)
            removed = _read_array(directory / manifest.removed_file)
        except (FileNotFoundError, KenningError):  # missing files: retried by load; ours: already one line
            raise
        except Exception as exc:  # faiss raises RuntimeError, pyarrow and numpy their own types
            raise KenningError(f"index {directory} is damaged: {first_line(exc)}") from None
        if base.dim != manifest.embedding_dim or delta.vectors.shape[1] != manifest.embedding_dim:
            raise KenningError(
                f"index {directory} is inconsistent: {base.dim}-d vectors, manifest says {manifest.embedding_dim}-d"
            )
        live = base.ntotal - len(removed) + len(delta.table)
        if base.ntotal != len(base_table) or len(delta.vectors) != len(delta.table) or live != manifest.count:
            raise KenningError(
                f"index {directory} is inconsistent: {base.ntotal} base vectors, {len(base_table)} base labels, "
                f"{len(removed)} removed, {len(delta.table)} enrolled; manifest says {manifest.count}"
            )
        return cls(manifest, base, base_table, delta, removed)

    @property
    def delta(self) -> Delta:
        return self._delta

    @property
    def removed(self) -> np.ndarray:
        return self._removed

    def _set_changes(self, delta: Delta, removed: np.ndarray) -> None:
        self._delta, self._removed = delta, removed
        self._delta_index = FaissIndex.create(self.manifest.embedding_dim, "Flat")
        self._delta_index.add(delta.vectors, delta.table["id"].to_numpy(np.int64))
        live_base = self.base_table[~self.base_table["id"].isin(removed)]
        self._table = _concat(live_base, delta.table).reset_index(drop=True)
        self._row_of = pd.Index(self._table["id"].to_numpy(dtype=np.int64))
        self._labels = self._table["label"].to_numpy(dtype=object).astype(str)


# -- catalogue operations on a directory: each locks, reads the latest commit, writes, commits --


def enroll(
    directory: str | Path, vectors: np.ndarray, image_ids: list[str], labels: list[str], paths: list[str]
) -> np.ndarray:
    """Add images to the side index of a saved index without touching its base; returns their ids."""
    directory = Path(directory)
    with _writer_lock(directory):
        manifest = read_index_manifest(directory)
        _check_dim(vectors, manifest.embedding_dim)
        delta = _read_delta(directory, manifest)
        ids = np.arange(manifest.next_id, manifest.next_id + len(vectors), dtype=np.int64)
        delta = Delta(
            _concat(delta.table, _rows(ids, image_ids, labels, paths)),
            np.concatenate([delta.vectors, np.asarray(vectors, np.float32)]),
        )
        _commit_changes(
            directory, manifest, delta, None, count=manifest.count + len(ids), next_id=manifest.next_id + len(ids)
        )
    return ids


def forget(directory: str | Path, labels: Sequence[str] = (), image_ids: Sequence[str] = ()) -> int:
    """Remove every image with one of `labels` or `image_ids`; returns how many. Base entries become
    tombstones (skipped by search, dropped by compaction); enrolments are dropped at once."""
    directory = Path(directory)
    with _writer_lock(directory):
        manifest = read_index_manifest(directory)
        base_table = pd.read_parquet(directory / manifest.base_table, columns=["id", "image_id", "label"])
        delta = _read_delta(directory, manifest)
        removed = _read_array(directory / manifest.removed_file)

        def matches(table: pd.DataFrame) -> pd.Series:
            return table["label"].isin(labels) | table["image_id"].isin(image_ids)

        base_hit = base_table.loc[matches(base_table) & ~base_table["id"].isin(removed), "id"].to_numpy(np.int64)
        delta_hit = matches(delta.table).to_numpy()
        count = len(base_hit) + int(delta_hit.sum())
        if count == 0:
            asked = ", ".join([*(f"label {x!r}" for x in labels), *(f"image {x!r}" for x in image_ids)])
            raise KenningError(f"nothing to forget: no {asked} in index {directory}")
        _commit_changes(
            directory,
            manifest,
            Delta(delta.table[~delta_hit].reset_index(drop=True), delta.vectors[~delta_hit]),
            np.union1d(removed, base_hit).astype(np.int64),
            count=manifest.count - count,
        )
    return count


def compact(directory: str | Path, progress: bool = False) -> GalleryIndex:
    """Fold enrolments into the base and drop forgotten entries: FAISS adds and removes in place
    where the index type can, otherwise (Annoy, HNSW, refined PQ) the base is rebuilt from its
    stored vectors. Queries see the same answers before and after."""
    directory = Path(directory)
    with _writer_lock(directory):
        index = GalleryIndex.load(directory)
        m = index.manifest
        delta_ids = index.delta.table["id"].to_numpy(np.int64)
        keep = ~index.base_table["id"].isin(index.removed).to_numpy()
        base_table = _concat(index.base_table[keep], index.delta.table).reset_index(drop=True)
        base = index.base
        try:
            if len(index.removed):
                base.remove(index.removed)
            base.add(index.delta.vectors, delta_ids, progress=progress)
        except NotImplementedError:
            kept_ids = index.base_table["id"].to_numpy(np.int64)[keep]
            vectors = np.concatenate([base.reconstruct(kept_ids), index.delta.vectors])
            base = create_index(m.backend, m.embedding_dim, len(vectors), m.index_type, m.search_params)
            base.add(vectors, np.concatenate([kept_ids, delta_ids]), progress=progress)
        empty = Delta(empty_table(), np.zeros((0, m.embedding_dim), np.float32))
        compacted = GalleryIndex(m, base, base_table, empty, np.zeros(0, np.int64))
        compacted._save_locked(directory, progress)
    return compacted


def set_threshold(directory: str | Path, threshold: float | None, calibration: dict[str, Any]) -> IndexManifest:
    """Record the unknown threshold and how it was chosen; only the manifest changes."""
    directory = Path(directory)
    with _writer_lock(directory):
        manifest = read_index_manifest(directory)
        manifest = dataclasses.replace(manifest, threshold=threshold, calibration=calibration)
        _commit(directory, manifest)
    return manifest


# -- files --


def read_index_manifest(directory: Path) -> IndexManifest:
    manifest = read_manifest(directory / MANIFEST, IndexManifest, FORMAT, "index")
    if manifest.threshold is not None and not (
        isinstance(manifest.threshold, int | float) and math.isfinite(manifest.threshold)
    ):
        raise KenningError(f"{directory / MANIFEST}: threshold {manifest.threshold!r} is not a finite number")
    if manifest.backend not in SUFFIX or not manifest.base_file.endswith(SUFFIX[manifest.backend]):
        raise KenningError(
            f"{directory / MANIFEST}: backend {manifest.backend!r} does not match its file {manifest.base_file!r}"
        )
    return manifest


def check_model(manifest: IndexManifest, model: ModelManifest) -> None:
    if model.fingerprint != manifest.model_fingerprint or model.embedding_dim != manifest.embedding_dim:
        raise KenningError(
            f"index was built with model {manifest.model_fingerprint} ({manifest.model_dir}), "
            f"not with model {model.fingerprint}: rebuild the index or use its model"
        )


def _writer_lock(directory: Path) -> AbstractContextManager[None]:
    """The lock of an existing index; a mistyped path is refused, not created."""
    read_index_manifest(directory)
    return index_lock(directory)


def _next_generation(directory: Path, manifest: IndexManifest) -> int:
    on_disk = read_index_manifest(directory).generation if (directory / MANIFEST).is_file() else 0
    return max(manifest.generation, on_disk) + 1


def _commit_changes(
    directory: Path, manifest: IndexManifest, delta: Delta, removed: np.ndarray | None, **fields: Any
) -> None:
    """Write the new side index (and tombstones, when they changed) as the next generation and commit."""
    gen = _next_generation(directory, manifest)
    changes = {"generation": gen, "delta_file": f"delta-{gen}.parquet", **fields}
    _write_delta(directory / changes["delta_file"], delta)
    if removed is not None:
        changes["removed_file"] = f"removed-{gen}.npy"
        atomic_save_array(directory / changes["removed_file"], removed)
    _commit(directory, dataclasses.replace(manifest, **changes))


def _check_dim(vectors: np.ndarray, dim: int) -> None:
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise KenningError(f"embeddings are {vectors.shape[-1]}-d but the index holds {dim}-d vectors")


def _commit(directory: Path, manifest: IndexManifest) -> None:
    """The manifest rename is the commit; then files no manifest names any more are removed."""
    atomic_write_json(directory / MANIFEST, dataclasses.asdict(manifest))
    keep = [manifest.base_file, manifest.base_table, manifest.delta_file, manifest.removed_file]
    for path in directory.iterdir():
        name = path.name
        if name.startswith(GENERATION_PREFIXES) and not any(name.startswith(k) for k in keep):
            path.unlink(missing_ok=True)


def _rows(ids: np.ndarray, image_ids: list[str], labels: list[str], paths: list[str]) -> pd.DataFrame:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return pd.DataFrame({"id": ids, "image_id": image_ids, "label": labels, "path": paths, "enrolled_at": now})


def _concat(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    if not len(b):
        return a
    return pd.concat([a, b], ignore_index=True) if len(a) else b.reset_index(drop=True)


def _write_delta(path: Path, delta: Delta) -> None:
    dim = delta.vectors.shape[1]
    table = pa.Table.from_pandas(delta.table[TABLE_COLUMNS].astype({"id": "int64"}), preserve_index=False)
    flat = pa.array(np.ascontiguousarray(delta.vectors, np.float32).ravel(), pa.float32())
    table = table.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, dim))
    atomic_save(path, lambda p: pq.write_table(table, p))


def _read_delta(directory: Path, manifest: IndexManifest) -> Delta:
    table = pq.read_table(directory / manifest.delta_file)
    column = table.column("vector").combine_chunks()
    vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    rows = table.drop(["vector"]).to_pandas()
    return Delta(rows, vectors.reshape(len(rows), manifest.embedding_dim))


def _read_array(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False).astype(np.int64)
