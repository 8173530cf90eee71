"""The index directory: a bulk index, a side index of enrolments, tombstones, labels, one manifest.

Layout (G is a generation number; a manifest names the files of its generation):
- `base-G.faiss` / `base-G.ann`: the bulk of the gallery, written by `build-index` and `--compact`;
- `base-G.parquet`: its label table (id, image_id, label, path, enrolled_at, sha256 of the file);
- `delta-G.parquet`: enrolments since, rows with their vectors (searched exactly in memory);
- `removed-G.npy`: ids of base entries forgotten since;
- `local-base-G.npz` / `local-delta-G.npz` (with local matching on): the local features of the base
  and of the enrolments, by the same ids, so tombstones and compaction apply to both stages;
- `manifest.json`: model fingerprint, embedding size, backend, counts, threshold, file names.

Enroll and forget write only the small files, so they take milliseconds at a million images
(rewriting a 2 GB base per enrolment would take seconds) and work for Annoy, which cannot add
or remove after building. Every write goes to new files and commits by renaming the manifest,
under an exclusive lock: a crash leaves the old index, two writers never lose each other's rows.

Kenning deletes only files it made: generation files by their exact names once no manifest names
them, and the temporaries of writers that were killed, each while holding the lock. It writes
only into a new or empty folder or an index of its own. Image ids are unique among the live
images, and so are file contents: the same bytes enrolled again under the same label are a no-op,
under another label a refusal.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kenning.atomic import atomic_save, atomic_save_array, atomic_write_json, sweep_temporaries, temporary_name
from kenning.config import IndexConfig, LocalConfig, check_value
from kenning.embeddings.checkpoint import ModelManifest
from kenning.errors import KenningError, first_line
from kenning.index.backend import SUFFIX, VectorIndex, create_index, load_index
from kenning.index.faiss_index import FaissIndex
from kenning.index.lock import index_lock
from kenning.index.topk import select_top
from kenning.labels import normalise_label
from kenning.local.featureset import FeatureSet, LocalFeatures, concat
from kenning.manifests import read_manifest
from kenning.paths import path_kind, require_output_dir

FORMAT = "kenning-index/2"
MANIFEST = "manifest.json"
TABLE_COLUMNS = ["id", "image_id", "label", "path", "enrolled_at", "sha256"]
_GENERATION = (
    r"(?:base-\d+\.(?:faiss|ann|ann\.ids\.npy|parquet)|delta-\d+\.parquet|removed-\d+\.npy"
    r"|local-(?:base|delta)-\d+\.npz)"
)
GENERATION_FILE = re.compile(rf"^{_GENERATION}$")  # the only names a commit ever deletes
TEMPORARY_FILE = temporary_name(rf"{_GENERATION}|manifest\.json")
OWN_FILE = re.compile(rf"^(?:{_GENERATION}|manifest\.json|index\.lock)$")


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
    model_dir_relative: str = ""  # model_dir relative to the index: found again when both are moved together
    local: dict[str, Any] = field(default_factory=dict)  # the LocalConfig its local features were made with; {}: none
    local_base_file: str = ""
    local_delta_file: str = ""
    fusion: dict[str, Any] = field(default_factory=dict)  # calibrators of the score parts, and what they were fitted on
    operating_point: dict[str, Any] = field(default_factory=dict)  # search_params tuned by measured recall (tuning.py)
    uid: str = ""  # made anew by every build: a service notices that its index was rebuilt, not changed
    file_sizes: dict[str, Any] = field(default_factory=dict)  # bytes of each file named above: truncation is refused
    format: str = FORMAT


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "id" else str) for c in TABLE_COLUMNS})


def _complete(table: pd.DataFrame) -> pd.DataFrame:
    """A label table read from disk, with the columns older indexes lack (no digest: "")."""
    return table if "sha256" in table else table.assign(sha256="")


@dataclass
class Enrolment:
    """What `enroll` did with each photo it was given."""

    ids: np.ndarray  # index ids of the photos added
    image_ids: list[str]  # their image ids: the given name, or made unique when the index holds it
    positions: list[int]  # which of the given photos were added
    already: list[tuple[int, str]]  # (position, image id) of photos whose bytes this label already has
    count: int  # images the index holds now


@dataclass
class Delta:
    """Enrolments since the base was built: their rows, vectors and (local matching on) local features."""

    table: pd.DataFrame
    vectors: np.ndarray
    local: FeatureSet | None = None

    def keep(self, mask: np.ndarray) -> Delta:
        local = None if self.local is None else self.local.select(np.isin(self.local.ids, self.table["id"][mask]))
        return Delta(self.table[mask].reset_index(drop=True), self.vectors[mask], local)


class GalleryIndex:
    """The in-memory view of an index directory: search over base + side index, minus tombstones."""

    def __init__(
        self,
        manifest: IndexManifest,
        base: VectorIndex,
        base_table: pd.DataFrame,
        delta: Delta | None = None,
        removed: np.ndarray | None = None,
        base_local: FeatureSet | None = None,
    ):
        self.manifest = manifest
        self.base = base
        self.base_table = base_table.reset_index(drop=True)
        self.base_local = base_local if base_local is not None or not manifest.local else FeatureSet.empty()
        self._set_changes(
            delta or _empty_delta(manifest),
            np.zeros(0, np.int64) if removed is None else removed,
        )

    @classmethod
    def new(
        cls,
        model: ModelManifest,
        model_dir: str | Path,
        cfg: IndexConfig,
        size: int,
        local: dict[str, Any] | None = None,
        first_id: int = 0,
    ) -> GalleryIndex:
        """An empty index for about `size` images; `cfg.index_type` auto picks the structure by size.
        `local`: the local-feature settings (LocalConfig as a dict) when local matching is on.
        `first_id`: where its ids start (a rebuild continues after the ids the old index gave out)."""
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
            local=dict(local or {}),
            uid=uuid.uuid4().hex,
            next_id=first_id,
        )
        return cls(manifest, base, empty_table())

    def __len__(self) -> int:
        return len(self.table)

    @property
    def table(self) -> pd.DataFrame:
        """Every answerable image: base rows not forgotten, then enrolments."""
        return self._table

    def add(
        self,
        vectors: np.ndarray,
        image_ids: list[str],
        labels: list[str],
        paths: list[str],
        digests: list[str] | None = None,
        progress: bool = False,
        local: Sequence[LocalFeatures] | None = None,
    ) -> np.ndarray:
        """Add to the bulk index (building a gallery); enrolments into a saved index go through `enroll`.
        `local`: each image's local features, required when the index matches them."""
        _check_dim(vectors, self.manifest.embedding_dim)
        _check_local(self.manifest, local, len(vectors))
        ids = np.arange(self.manifest.next_id, self.manifest.next_id + len(vectors), dtype=np.int64)
        self.base.add(vectors, ids, progress=progress)
        self.base_table = _concat(self.base_table, _rows(ids, image_ids, labels, paths, digests))
        if local is not None and self.base_local is not None:
            self.base_local = concat([self.base_local, FeatureSet.of(ids, local)])
        self.manifest.next_id += len(vectors)
        self._set_changes(self.delta, self.removed)
        return ids

    def extend(self, chunks: Iterable[tuple[np.ndarray, pd.DataFrame]]) -> None:
        """A streamed build: each chunk's vectors (with its rows: image_id, label, path, sha256) go into
        the bulk index as they come, so memory holds the index and one chunk; the label table is put
        together once at the end (growing it chunk by chunk would copy it quadratically)."""
        if self.manifest.local:
            raise KenningError("an index with local features is built from the images, not streamed vectors")
        tables = [self.base_table]
        for vectors, rows in chunks:
            _check_dim(vectors, self.manifest.embedding_dim)
            ids = np.arange(self.manifest.next_id, self.manifest.next_id + len(vectors), dtype=np.int64)
            self.base.add(vectors, ids)
            tables.append(_rows(ids, *(rows[c].tolist() for c in ("image_id", "label", "path", "sha256"))))
            self.manifest.next_id += len(vectors)
        self.base_table = pd.concat(tables, ignore_index=True)
        self._set_changes(self.delta, self.removed)

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarities, ids) over base and side index, forgotten entries skipped; -inf / -1 pad.

        `exclude[i]` is an id query i must not match (itself, for leave-one-out), or a row of them
        (its own sighting), -1 padded.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        extra = 0 if exclude is None else 1 if np.ndim(exclude) == 1 else np.shape(exclude)[1]
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
        return self._column_of(ids, "path")

    def image_ids_of(self, ids: np.ndarray) -> np.ndarray:
        """Image id (the name `forget --id` takes) of each index id ("" for none)."""
        return self._column_of(ids, "image_id")

    def _column_of(self, ids: np.ndarray, column: str) -> np.ndarray:
        rows = self._row_of.get_indexer(ids.ravel())
        values = self._table[column].to_numpy(dtype=object)
        out = np.where(rows >= 0, values[np.maximum(rows, 0)] if len(values) else "", "")
        return out.reshape(ids.shape)

    def ids_of_images(self, image_ids: list[str], digests: list[str] | None = None) -> np.ndarray:
        """Index id of each image: by image id, else (given `digests`) by the same bytes under
        another name; -1 for those not in the gallery."""
        found = _lookup(self.table, "image_id", image_ids)
        if digests is not None:
            by_bytes = _lookup(self.table[self.table["sha256"] != ""], "sha256", [d or "-" for d in digests])
            found = np.where(found >= 0, found, by_bytes)
        return found

    def live_local(self) -> FeatureSet | None:
        """Local features of every answerable image (base not forgotten, then enrolments); None when
        the index has none."""
        if self.base_local is None:
            return None
        if self._live_local is None:  # the matcher, evaluation and reports all ask: gathered once per change
            base = self.base_local.select(~np.isin(self.base_local.ids, self.removed))
            self._live_local = concat([base, self.delta.local]) if self.delta.local is not None else base
        return self._live_local

    def local_layout(self) -> tuple[FeatureSet, int, np.ndarray] | None:
        """What local matching searches: the base's features (forgotten ones included), then the
        enrolments'; how many rows are the base's; the rows forgotten. The base part is the same
        until the next compaction or build, so its descriptor index can outlive enrolments."""
        if self.base_local is None:
            return None
        features = concat([self.base_local, self.delta.local]) if self.delta.local is not None else self.base_local
        dead = np.flatnonzero(np.isin(self.base_local.ids, self.removed))
        return features, len(self.base_local), dead

    def local_of(self, ids: np.ndarray) -> list[LocalFeatures]:
        """Stored local features of live ids (the index must have them)."""
        live = self.live_local()
        if live is None:
            raise KenningError("this index has no local features")
        rows = live.rows_of(np.asarray(ids, np.int64))
        return [live.image(r) for r in rows]

    def with_enrolled(
        self, vectors: np.ndarray, image_ids: list[str], labels: list[str], local: Sequence[LocalFeatures] | None
    ) -> GalleryIndex:
        """A copy in memory with more images in its side index (nothing is written): calibration
        enrols held-out identities into it exactly as `enroll` would into the saved index."""
        _check_dim(vectors, self.manifest.embedding_dim)
        _check_local(self.manifest, local, len(vectors))
        manifest = dataclasses.replace(self.manifest, next_id=self.manifest.next_id + len(vectors))
        ids = np.arange(self.manifest.next_id, manifest.next_id, dtype=np.int64)
        rows = _rows(ids, image_ids, labels, [""] * len(ids))
        delta_local = None
        if local is not None:
            delta_local = concat([self.delta.local or FeatureSet.empty(), FeatureSet.of(ids, local)])
        delta = Delta(_concat(self.delta.table, rows), np.concatenate([self.delta.vectors, vectors]), delta_local)
        return GalleryIndex(manifest, self.base, self.base_table, delta, self.removed, self.base_local)

    def label_counts(self) -> pd.Series:
        return self.table["label"].value_counts()

    def check_model(self, model: ModelManifest) -> None:
        check_model(self.manifest, model)

    def set_search_params(self, search_params: str) -> None:
        self.base.set_search_params(search_params)
        self.manifest.search_params = search_params

    def save(self, directory: str | Path, progress: bool = False, replace: bool = False) -> None:
        """Write everything as a new generation (after building). Over another index only when that
        loses nothing (see `claim_for_build`) and reuses none of its ids, checked under the lock."""
        directory = check_index_dir(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with index_lock(directory):
            if (directory / MANIFEST).exists() and read_index_manifest(directory).uid != self.manifest.uid:
                first = int(self.base_table["id"].min()) if len(self.base_table) else self.manifest.next_id
                if claim_for_build(directory, replace) > first:
                    raise KenningError(
                        f"index {directory} gave out image ids this build also uses (enrolments while it ran?): "
                        "nothing was written; run the build again"
                    )
            self._save_locked(directory, progress)

    def _save_locked(self, directory: Path, progress: bool) -> None:
        gen = _next_generation(directory, self.manifest)
        base_file = f"base-{gen}{SUFFIX[self.manifest.backend]}"
        self.base.save(directory / base_file, progress=progress)
        atomic_save(directory / f"base-{gen}.parquet", lambda p: _write_table(self.base_table, p))
        _write_delta(directory / f"delta-{gen}.parquet", self.delta)
        atomic_save_array(directory / f"removed-{gen}.npy", self.removed)
        local_files = {}
        if self.manifest.local:
            local_files = {"local_base_file": f"local-base-{gen}.npz", "local_delta_file": f"local-delta-{gen}.npz"}
            self.base_local.save(directory / local_files["local_base_file"])
            (self.delta.local or FeatureSet.empty()).save(directory / local_files["local_delta_file"])
        self.manifest = dataclasses.replace(
            self.manifest,
            **local_files,
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
        check_files(directory, manifest)
        self.manifest = manifest
        self._set_changes(_read_delta(directory, manifest), _read_array(directory / manifest.removed_file))

    @classmethod
    def _load(cls, directory: Path, manifest: IndexManifest) -> GalleryIndex:
        check_files(directory, manifest)
        try:
            base = load_index(
                manifest.backend,
                directory / manifest.base_file,
                manifest.embedding_dim,
                manifest.index_type,
                manifest.search_params,
            )
            base_table = _complete(pd.read_parquet(directory / manifest.base_table))
            delta = _read_delta(directory, manifest)
            removed = _read_array(directory / manifest.removed_file)
            base_local = FeatureSet.load(directory / manifest.local_base_file) if manifest.local else None
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
        if base_local is not None and not _same_ids(base_local.ids, base_table["id"]):
            raise KenningError(f"index {directory} is inconsistent: its local features are not those of its images")
        return cls(manifest, base, base_table, delta, removed, base_local)

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
        self._live_local: FeatureSet | None = None


# -- catalogue operations on a directory: each locks, reads the latest commit, writes, commits --


def enroll(
    directory: str | Path,
    vectors: np.ndarray,
    image_ids: list[str],
    labels: list[str],
    paths: list[str],
    digests: list[str] | None = None,
    local: Sequence[LocalFeatures] | None = None,
) -> Enrolment:
    """Add images (and, for an index that matches them, their local features) to the side index of
    a saved index without touching its base.

    Checked against the live images under the lock: an image id the index holds is made unique
    (`IMG_0001-<first 8 hex of its sha256>.jpg`), so `forget --id` never removes two photos; bytes
    the index holds under the same label are skipped (reported in `already`), under another label
    refused, and nothing is written."""
    directory = Path(directory)
    digests = list(digests) if digests is not None else [""] * len(image_ids)  # "": no content to compare
    with _writer_lock(directory):
        manifest = _locked_manifest(directory)
        _check_dim(vectors, manifest.embedding_dim)
        _check_local(manifest, local, len(vectors))
        delta = _read_delta(directory, manifest)
        candidates = [c for name, digest in zip(image_ids, digests, strict=True) for c in _id_candidates(name, digest)]
        live = _live_rows(directory, manifest, delta, candidates, [d for d in digests if d])
        taken = set(live["image_id"])
        owner = dict(zip(live["sha256"], zip(live["image_id"], live["label"], strict=True), strict=True))
        owner.pop("", None)
        positions, new_ids, already = [], [], []
        for i, (name, label, path, digest) in enumerate(zip(image_ids, labels, paths, digests, strict=True)):
            if digest in owner:
                held_id, held_label = owner[digest]
                if held_label != label:
                    raise KenningError(
                        f"{path} is already in index {directory} as {held_id!r} of {held_label!r}: forget it "
                        f"there before enrolling it as {label!r}; nothing was enrolled"
                    )
                already.append((i, held_id))
                continue
            image_id = _unique_image_id(name, digest, taken)
            taken.add(image_id)
            if digest:
                owner[digest] = (image_id, label)
            positions.append(i)
            new_ids.append(image_id)
        ids = np.arange(manifest.next_id, manifest.next_id + len(positions), dtype=np.int64)
        count = manifest.count + len(ids)
        if len(ids):
            pick = [labels, paths, digests]
            rows = _rows(ids, new_ids, *([column[i] for i in positions] for column in pick))
            added = np.asarray(vectors, np.float32)[positions]
            added_local = None
            if delta.local is not None and local is not None:
                added_local = concat([delta.local, FeatureSet.of(ids, [local[i] for i in positions])])
            delta = Delta(_concat(delta.table, rows), np.concatenate([delta.vectors, added]), added_local)
            _commit_changes(directory, manifest, delta, None, count=count, next_id=manifest.next_id + len(ids))
    return Enrolment(ids, new_ids, positions, already, count)


def _live_rows(
    directory: Path, manifest: IndexManifest, delta: Delta, image_ids: list[str], digests: list[str]
) -> pd.DataFrame:
    """image_id, label, sha256 of the answerable images (base not forgotten, enrolments) that have
    one of `image_ids` or `digests`: filtered in Arrow, so enrolling beside a million-image base reads
    two columns and builds no Python set of a million ids."""
    path = directory / manifest.base_table
    names = pq.read_schema(path).names
    base = pq.read_table(path, columns=[c for c in ("id", "image_id", "label", "sha256") if c in names])
    hit = pc.is_in(base["image_id"], value_set=pa.array(image_ids, pa.string()))
    if "sha256" in names:
        hit = pc.or_(hit, pc.is_in(base["sha256"], value_set=pa.array(digests, pa.string())))
    rows = _complete(base.filter(hit).to_pandas())
    rows = rows[~rows["id"].isin(_read_array(directory / manifest.removed_file))]
    columns = ["image_id", "label", "sha256"]
    return _concat(rows[columns], delta.table[columns])


ID_TRIES = 10  # IMG_1.jpg, IMG_1-<sha8>.jpg, IMG_1-<sha8>-2.jpg, ...


def _id_candidates(name: str, digest: str) -> list[str]:
    stem, suffix = os.path.splitext(name)
    tag = digest[:8] or "copy"
    return [name, f"{stem}-{tag}{suffix}", *(f"{stem}-{tag}-{n}{suffix}" for n in range(2, ID_TRIES))]


def _unique_image_id(name: str, digest: str, taken: set[str]) -> str:
    """The first free candidate; `taken` holds every live id among the candidates."""
    free = next((c for c in _id_candidates(name, digest) if c not in taken), None)
    if free is None:
        raise KenningError(f"cannot give {name!r} a unique image id: {ID_TRIES} variants are taken; rename the file")
    return free


@dataclass
class Forgotten:
    """What `forget` removed."""

    count: int  # images removed
    photos_deleted: list[str]  # names of the kept uploads deleted with them (see photos.py)


def forget(
    directory: str | Path,
    labels: Sequence[str] = (),
    image_ids: Sequence[str] = (),
    photos_dir: Path | None = None,
) -> Forgotten:
    """Remove every image with one of `labels` or `image_ids`. Base entries become tombstones
    (skipped by search, dropped by compaction); enrolments are dropped at once. Each label and id
    must name a live image: a typo among them refuses the whole call, so nothing is removed on a
    guess. With `photos_dir`, the uploads a service kept there for the removed images are deleted
    too, unless a live image still names them (under the lock: no enrolment can claim them meanwhile)."""
    from kenning.photos import delete_kept

    directory = Path(directory)
    labels = [normalise_label(label) for label in labels]
    with _writer_lock(directory):
        manifest = _locked_manifest(directory)
        base_table = pd.read_parquet(directory / manifest.base_table, columns=["id", "image_id", "label", "path"])
        delta = _read_delta(directory, manifest)
        removed = _read_array(directory / manifest.removed_file)
        live_base = base_table[~base_table["id"].isin(removed)]
        live = _concat(live_base, delta.table[["id", "image_id", "label", "path"]]).reset_index(drop=True)
        absent = [f"label {x!r}" for x in labels if not (live["label"] == x).any()]
        absent += [f"image {x!r}" for x in image_ids if not (live["image_id"] == x).any()]
        if absent:
            raise KenningError(f"no {', '.join(absent)} in index {directory}: nothing was forgotten")
        hit = (live["label"].isin(labels) | live["image_id"].isin(image_ids)).to_numpy()
        base_hit = live_base["id"].to_numpy(np.int64)[hit[: len(live_base)]]
        _commit_changes(
            directory,
            manifest,
            delta.keep(~hit[len(live_base) :]),
            np.union1d(removed, base_hit).astype(np.int64),
            count=manifest.count - int(hit.sum()),
        )
        paths = live["path"].to_numpy(dtype=object)
        orphans = sorted(set(paths[hit]) - set(paths[~hit]) - {""})  # no live image names them any more
        deleted = delete_kept(photos_dir, orphans) if photos_dir is not None else []
    return Forgotten(int(hit.sum()), deleted)


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
        compacted = GalleryIndex(m, base, base_table, _empty_delta(m), np.zeros(0, np.int64), index.live_local())
        compacted._save_locked(directory, progress)
    return compacted


def set_threshold(
    directory: str | Path, threshold: float | None, calibration: dict[str, Any], fusion: dict[str, Any] | None = None
) -> IndexManifest:
    """Record the unknown threshold and how it was chosen (and, with local matching, the fusion of
    the stages with its own threshold); only the manifest changes."""
    directory = Path(directory)
    with _writer_lock(directory):
        manifest = _locked_manifest(directory)
        manifest = dataclasses.replace(manifest, threshold=threshold, calibration=calibration, fusion=fusion or {})
        _commit(directory, manifest)
    return manifest


# -- files --


def read_index_manifest(directory: Path) -> IndexManifest:
    """The committed manifest, every value checked: a damaged one is refused in one line, by name."""
    where = directory / MANIFEST
    manifest = read_manifest(where, IndexManifest, FORMAT, "index")

    def damaged(what: str) -> KenningError:
        return KenningError(f"{where} is damaged: {what}")

    for key in ("count", "next_id", "generation"):
        if getattr(manifest, key) < 0:
            raise damaged(f"{key} {getattr(manifest, key)} is negative")
    if manifest.count > manifest.next_id:
        raise damaged(f"count {manifest.count} exceeds the ids ever given ({manifest.next_id})")
    if not 1 <= manifest.embedding_dim <= MAX_DIM:
        raise damaged(f"embedding_dim {manifest.embedding_dim} is not in [1, {MAX_DIM}]")
    for key in ("threshold", "k", "power", "unknown_label"):
        try:
            check_value(f"index.{key}", getattr(manifest, key))
        except KenningError as exc:
            raise damaged(str(exc)) from None
    for key in _FILE_FIELDS:
        name = getattr(manifest, key)
        required = key not in ("local_base_file", "local_delta_file")
        if (name or required) and not GENERATION_FILE.match(name):
            raise damaged(f"{key} {name!r} is not the name of an index file")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in manifest.file_sizes.values()):
        raise damaged("file_sizes holds something other than byte counts")
    fused = manifest.fusion.get("threshold")
    fused_ok = fused is None or (isinstance(fused, int | float) and not isinstance(fused, bool) and 0 <= fused <= 1)
    if not fused_ok:
        raise damaged("the fused threshold is not a probability")
    if manifest.local:
        try:
            for key, value in dataclasses.asdict(LocalConfig(**manifest.local)).items():
                check_value(f"local.{key}", value)
        except (TypeError, KenningError) as exc:
            raise damaged(f"local matching settings: {first_line(exc)}") from None
    if manifest.backend not in SUFFIX or not manifest.base_file.endswith(SUFFIX[manifest.backend]):
        raise damaged(f"backend {manifest.backend!r} does not match its file {manifest.base_file!r}")
    return manifest


_FILE_FIELDS = ("base_file", "base_table", "delta_file", "removed_file", "local_base_file", "local_delta_file")
MAX_DIM = 65_536


def _named_files(manifest: IndexManifest) -> list[str]:
    return [name for name in (getattr(manifest, key) for key in _FILE_FIELDS) if name]


def check_files(directory: Path, manifest: IndexManifest) -> None:
    """Every file the manifest names is a regular file of the size it was committed with: a FIFO
    would block a reader, and a truncated or replaced file is refused before anything reads it or
    commits on top of it. A missing file raises FileNotFoundError (a concurrent commit may have
    removed it: `GalleryIndex.load` retries)."""
    for name in _named_files(manifest):
        path = directory / name
        kind = path_kind(path)
        if kind is None:
            raise FileNotFoundError(2, "missing", str(path))
        if kind != "a regular file":
            raise KenningError(f"index {directory} is damaged: {name} is {kind}, not a file")
        expected = manifest.file_sizes.get(name)
        size = path.stat().st_size
        if expected is not None and size != expected:
            raise KenningError(
                f"index {directory} is damaged: {name} is {size} bytes, its manifest says {expected} "
                "(truncated or replaced); rebuild the index or restore it from a backup"
            )


def check_model(manifest: IndexManifest, model: ModelManifest) -> None:
    """Refuse a model the index was not built with, saying what differs (the full fingerprints)."""
    if model.fingerprint != manifest.model_fingerprint:
        raise KenningError(
            f"index was built with model {manifest.model_fingerprint} ({manifest.model_dir}), "
            f"not with model {model.fingerprint}: rebuild the index or use its model"
        )
    if model.embedding_dim != manifest.embedding_dim:
        raise KenningError(
            f"index holds {manifest.embedding_dim}-d vectors but model {model.fingerprint} gives "
            f"{model.embedding_dim}-d ones (a damaged manifest?): rebuild the index or use its model"
        )


def is_index_dir(directory: Path) -> bool:
    """A folder holding an index (its manifest must read as one), or only files an index build makes."""
    if (directory / MANIFEST).exists():
        read_index_manifest(directory)  # a foreign or damaged manifest is refused, by name
        return True
    return all(OWN_FILE.match(p.name) or TEMPORARY_FILE.match(p.name) for p in directory.iterdir())


def check_index_dir(directory: str | Path) -> Path:
    """Where an index may be written: a new or empty folder, or an index (which the write replaces)."""
    return require_output_dir(directory, "index folder", is_index_dir)


def claim_for_build(directory: str | Path, replace: bool = False) -> int:
    """Check that a build may write its index into `directory`, before any work; returns the first
    image id it must give. A folder holding an index is rebuilt only when that loses nothing (no
    enrolments or forgotten images since its build: a rebuild from the data would drop the first
    and bring the second back) or with `replace`; ids continue after the old index's, so an id a
    client holds never names another image."""
    directory = check_index_dir(directory)
    if not (directory / MANIFEST).exists():
        return 0
    old = read_index_manifest(directory)
    if not replace:
        _check_present(directory, old)
        enrolled = pq.read_metadata(directory / old.delta_file).num_rows
        forgotten = len(_read_array(directory / old.removed_file))
        if enrolled or forgotten:
            raise KenningError(
                f"{directory} holds an index with {enrolled} enrolment(s) and {forgotten} forgotten image(s) since "
                "its build: rebuilding it would drop those enrolments and bring the forgotten images back; fold "
                "them in with build-index --compact, build into a new folder, or pass --replace"
            )
    return old.next_id


def _writer_lock(directory: Path) -> AbstractContextManager[None]:
    """The lock of an existing index; a mistyped path is refused, not created."""
    read_index_manifest(directory)
    return index_lock(directory)


def _locked_manifest(directory: Path) -> IndexManifest:
    """The manifest a writer holding the lock commits on top of, its files checked first: a
    truncated or replaced file is refused, never built upon."""
    manifest = read_index_manifest(directory)
    _check_present(directory, manifest)
    return manifest


def _check_present(directory: Path, manifest: IndexManifest) -> None:
    """`check_files` where no concurrent commit can be running: a missing file is damage too."""
    try:
        check_files(directory, manifest)
    except FileNotFoundError as exc:
        raise KenningError(f"index {directory} is damaged: {Path(exc.filename).name} is missing") from None


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
    if manifest.local:
        changes["local_delta_file"] = f"local-delta-{gen}.npz"
        (delta.local or FeatureSet.empty()).save(directory / changes["local_delta_file"])
    if removed is not None:
        changes["removed_file"] = f"removed-{gen}.npy"
        atomic_save_array(directory / changes["removed_file"], removed)
    _commit(directory, dataclasses.replace(manifest, **changes))


def _check_dim(vectors: np.ndarray, dim: int) -> None:
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise KenningError(f"embeddings are {vectors.shape[-1]}-d but the index holds {dim}-d vectors")


def _commit(directory: Path, manifest: IndexManifest) -> None:
    """The manifest rename is the commit; then the generation files no manifest names any more, and
    temporaries of killed writers, are removed (under the lock: no other writer is running)."""
    keep = _named_files(manifest)
    manifest.file_sizes = {name: (directory / name).stat().st_size for name in keep}
    atomic_write_json(directory / MANIFEST, dataclasses.asdict(manifest))
    for path in directory.iterdir():
        name = path.name
        if GENERATION_FILE.match(name) and not any(name == k or name.startswith(f"{k}.") for k in keep):
            path.unlink(missing_ok=True)
    sweep_temporaries(directory, TEMPORARY_FILE)


def _rows(
    ids: np.ndarray, image_ids: list[str], labels: list[str], paths: list[str], digests: list[str] | None = None
) -> pd.DataFrame:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return pd.DataFrame(
        {
            "id": ids,
            "image_id": image_ids,
            "label": labels,
            "path": paths,
            "enrolled_at": now,
            "sha256": list(digests) if digests is not None else "",
        }
    )


def _lookup(table: pd.DataFrame, column: str, keys: list[str]) -> np.ndarray:
    """The id of the first row whose `column` equals each key, -1 where none does."""
    lookup = pd.Series(table["id"].to_numpy(), index=table[column].to_numpy())
    lookup = lookup[~lookup.index.duplicated(keep="first")]
    return lookup.reindex(keys).fillna(-1).to_numpy(dtype=np.int64)


def _concat(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    if not len(b):
        return a
    return pd.concat([a, b], ignore_index=True) if len(a) else b.reset_index(drop=True)


def _write_table(table: pd.DataFrame, path: Path) -> None:
    # Dictionary-encoding a column of unique values (ids, digests) makes it several times slower to
    # read, and every enrolment reads image_id and sha256 of the whole base table.
    arrow = pa.Table.from_pandas(table[TABLE_COLUMNS], preserve_index=False)
    pq.write_table(arrow, path, use_dictionary=["label", "path", "enrolled_at"])


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
    rows = _complete(table.drop(["vector"]).to_pandas())
    local = FeatureSet.load(directory / manifest.local_delta_file) if manifest.local else None
    if local is not None and not _same_ids(local.ids, rows["id"]):
        raise KenningError(f"index {directory} is inconsistent: the local features of its enrolments do not match them")
    return Delta(rows, vectors.reshape(len(rows), manifest.embedding_dim), local)


def _empty_delta(manifest: IndexManifest) -> Delta:
    local = FeatureSet.empty() if manifest.local else None
    return Delta(empty_table(), np.zeros((0, manifest.embedding_dim), np.float32), local)


def _check_local(manifest: IndexManifest, local: Sequence[LocalFeatures] | None, count: int) -> None:
    if manifest.local and (local is None or len(local) != count):
        raise KenningError("this index matches local features: images must come with theirs (one per image)")


def _same_ids(a: np.ndarray, b: pd.Series) -> bool:
    return np.array_equal(np.sort(np.asarray(a, np.int64)), np.sort(b.to_numpy(np.int64)))


def _read_array(path: Path) -> np.ndarray:
    """Ids stored as a one-dimensional integer array (anything else is a damaged index)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise KenningError(f"index file {path.name} is damaged: {first_line(exc)}") from None
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise KenningError(f"index file {path.name} is damaged: it holds {array.dtype} of shape {array.shape}, not ids")
    return array.astype(np.int64)
