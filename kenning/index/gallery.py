"""The in-memory view of an index directory: search over the bulk index and the side index of
enrolments, minus tombstones; built, saved and loaded through the commit protocol (files.py)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kenning.atomic import atomic_save, atomic_save_array
from kenning.config import IndexConfig
from kenning.decision.normalise import stored_norm
from kenning.embeddings.checkpoint import ModelManifest
from kenning.errors import KenningError, first_line
from kenning.index.backend import SUFFIX, VectorIndex, create_index, load_index
from kenning.index.faiss_index import FaissIndex
from kenning.index.files import (
    Delta,
    claim_for_build,
    commit,
    complete_table,
    concat_tables,
    empty_delta,
    empty_table,
    first_ids,
    next_generation,
    read_delta,
    read_ids,
    same_ids,
    table_rows,
    write_delta,
    write_table,
)
from kenning.index.lock import index_lock
from kenning.index.manifest import (
    MANIFEST,
    IndexManifest,
    check_dim,
    check_files,
    check_index_dir,
    check_model,
    read_index_manifest,
)
from kenning.index.topk import select_top
from kenning.local.featureset import FeatureSet, LocalFeatures, concat


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
        self.base_local = (
            base_local if base_local is not None or not manifest.local else FeatureSet.empty(manifest.descriptor_layout)
        )
        self._set_changes(
            delta or empty_delta(manifest),
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
            normalise=stored_norm(cfg.normalise, cfg.cohort_skip, cfg.cohort_size),
            viewpoints=cfg.viewpoints,
            compatible_viewpoints=cfg.compatible_viewpoints,
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
        metadata: dict[str, list[str]] | None = None,
    ) -> np.ndarray:
        """Add to the bulk index (building a gallery); enrolments into a saved index go through `enroll`.
        `local`: each image's local features, required when the index matches them; `metadata`:
        their viewpoints and encounters (data/metadata.py)."""
        self.manifest.check_added(vectors, local)
        ids = np.arange(self.manifest.next_id, self.manifest.next_id + len(vectors), dtype=np.int64)
        self.base.add(vectors, ids, progress=progress)
        self.base_table = concat_tables(self.base_table, table_rows(ids, image_ids, labels, paths, digests, metadata))
        if local is not None and self.base_local is not None:
            layout = self.manifest.descriptor_layout
            self.base_local = concat([self.base_local, FeatureSet.of(ids, local, layout)], layout)
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
            check_dim(vectors, self.manifest.embedding_dim)
            ids = np.arange(self.manifest.next_id, self.manifest.next_id + len(vectors), dtype=np.int64)
            self.base.add(vectors, ids)
            given = {c: rows[c].tolist() for c in ("viewpoint", "encounter") if c in rows}
            tables.append(table_rows(ids, *(rows[c].tolist() for c in ("image_id", "label", "path", "sha256")), given))
            self.manifest.next_id += len(vectors)
        self.base_table = pd.concat(tables, ignore_index=True)
        self._set_changes(self.delta, self.removed)

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarities, ids) over base and side index, forgotten entries skipped; -inf / -1 pad.
        `exclude[i]`: an id query i must not match (itself, leave-one-out), or a row of them (its own
        sighting), -1 padded."""
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
        return self.column_of(ids, "path")

    def image_ids_of(self, ids: np.ndarray) -> np.ndarray:
        """Image id (the name `forget --id` takes) of each index id ("" for none)."""
        return self.column_of(ids, "image_id")

    def column_of(self, ids: np.ndarray, column: str) -> np.ndarray:
        rows = self._row_of.get_indexer(ids.ravel())
        values = self._table[column].to_numpy(dtype=object)
        out = np.where(rows >= 0, values[np.maximum(rows, 0)] if len(values) else "", "")
        return out.reshape(ids.shape)

    def ids_of_images(self, image_ids: list[str], digests: list[str] | None = None) -> np.ndarray:
        """Index id of each image: by image id, else (with `digests`) by its bytes; -1 if absent."""
        found = first_ids(self.table, "image_id", image_ids)
        if digests is not None:
            by_bytes = first_ids(self.table[self.table["sha256"] != ""], "sha256", [d or "-" for d in digests])
            found = np.where(found >= 0, found, by_bytes)
        return found

    def live_local(self) -> FeatureSet | None:
        """Local features of every answerable image (base not forgotten, then enrolments); None when
        the index has none."""
        if self.base_local is None:
            return None
        if self._live_local is None:  # compaction and reports: a copy of the base only when images were forgotten
            base = self.base_local.select(~np.isin(self.base_local.ids, self.removed))
            delta = self.delta.local
            self._live_local = base if delta is None else concat([base, delta], self.manifest.descriptor_layout)
        return self._live_local

    def local_layout(self) -> tuple[FeatureSet, FeatureSet | None, np.ndarray]:
        """What local matching searches: the base's features (forgotten ones included; memory-mapped
        when loaded), the enrolments' after them, and the base rows forgotten. The base is the same
        until the next compaction or build, so its descriptor index can outlive enrolments."""
        self.manifest.require_local()
        return self.base_local, self.delta.local, np.flatnonzero(np.isin(self.base_local.ids, self.removed))

    def local_of(self, ids: np.ndarray) -> list[LocalFeatures]:
        """Stored local features of live ids (the index must have them), read from the base or the
        enrolments without gathering either whole."""
        if self.base_local is None:
            raise KenningError("this index has no local features")
        delta = self.delta.local or FeatureSet.empty(self.manifest.descriptor_layout)
        ids = np.asarray(ids, np.int64)
        in_delta, in_base = delta.rows_of(ids), self.base_local.rows_of(ids)
        if np.any((in_delta < 0) & (in_base < 0)):
            raise KenningError(f"no local features for image ids {ids[(in_delta < 0) & (in_base < 0)].tolist()}")
        return [delta.image(d) if d >= 0 else self.base_local.image(b) for d, b in zip(in_delta, in_base, strict=True)]

    def with_enrolled(
        self,
        vectors: np.ndarray,
        image_ids: list[str],
        labels: list[str],
        local: Sequence[LocalFeatures] | None,
        metadata: dict[str, list[str]] | None = None,
    ) -> GalleryIndex:
        """A copy in memory with more images in its side index (nothing is written): calibration
        enrols held-out identities into it exactly as `enroll` would into the saved index."""
        self.manifest.check_added(vectors, local)
        manifest = dataclasses.replace(self.manifest, next_id=self.manifest.next_id + len(vectors))
        ids = np.arange(self.manifest.next_id, manifest.next_id, dtype=np.int64)
        rows = table_rows(ids, image_ids, labels, [""] * len(ids), None, metadata)
        delta_local = None
        if local is not None:
            layout = self.manifest.descriptor_layout
            delta_local = concat(
                [self.delta.local or FeatureSet.empty(layout), FeatureSet.of(ids, local, layout)], layout
            )
        delta = Delta(concat_tables(self.delta.table, rows), np.concatenate([self.delta.vectors, vectors]), delta_local)
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
            self.save_locked(directory, progress)

    def save_locked(self, directory: Path, progress: bool) -> None:
        """`save` for a caller that holds the index's lock already (compaction)."""
        gen = next_generation(directory, self.manifest)
        base_file = f"base-{gen}{SUFFIX[self.manifest.backend]}"
        self.base.save(directory / base_file, progress=progress)
        atomic_save(directory / f"base-{gen}.parquet", lambda p: write_table(self.base_table, p))
        write_delta(directory / f"delta-{gen}.parquet", self.delta)
        atomic_save_array(directory / f"removed-{gen}.npy", self.removed)
        local_files = {}
        if self.manifest.local:
            local_files = {"local_base_file": f"local-base-{gen}.npz", "local_delta_file": f"local-delta-{gen}.npz"}
            self.base_local.save(directory / local_files["local_base_file"])
            delta_local = self.delta.local or FeatureSet.empty(self.manifest.descriptor_layout)
            delta_local.save(directory / local_files["local_delta_file"])
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
        commit(directory, self.manifest)

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
        if manifest.base_table != self.manifest.base_table:  # relabelled (curation): same vectors, new labels
            self.base_table = complete_table(pd.read_parquet(directory / manifest.base_table))
        self.manifest = manifest
        self._set_changes(read_delta(directory, manifest), read_ids(directory / manifest.removed_file))

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
            base_table = complete_table(pd.read_parquet(directory / manifest.base_table))
            delta = read_delta(directory, manifest)
            removed = read_ids(directory / manifest.removed_file)
            base_local = None
            if manifest.local:  # memory-mapped: a query reads the pages of its shortlist only
                base_local = FeatureSet.load(directory / manifest.local_base_file, manifest.descriptor_layout, True)
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
        if base_local is not None and not same_ids(base_local.ids, base_table["id"]):
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
        self._table = concat_tables(live_base, delta.table).reset_index(drop=True)
        self._row_of = pd.Index(self._table["id"].to_numpy(dtype=np.int64))
        self._labels = self._table["label"].to_numpy(dtype=object).astype(str)
        self.has_viewpoints = bool((self._table["viewpoint"] != "").any())  # per change, not per query
        self._live_local: FeatureSet | None = None
