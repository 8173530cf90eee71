"""Catalogue operations on an index directory: enrol, forget, compact, record the answer rules. Each
locks, reads the latest commit, writes new files and commits (files.py).

Enroll and forget write only the small files, so they take milliseconds at a million images
(rewriting a 2 GB base per enrolment would take seconds) and work for Annoy, which cannot add or
remove after building. Image ids are unique among the live images, and so are file contents: the
same bytes enrolled again under the same label are a no-op, under another label a refusal.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kenning.decision.grouping import Grouping
from kenning.decision.rules import Fused, Votes
from kenning.errors import KenningError
from kenning.index.backend import create_index
from kenning.index.files import (
    Delta,
    commit,
    commit_changes,
    complete_table,
    concat_tables,
    empty_delta,
    locked_manifest,
    read_delta,
    read_ids,
    table_rows,
    writer_lock,
)
from kenning.index.gallery import GalleryIndex
from kenning.index.history import event
from kenning.index.manifest import IndexManifest
from kenning.labels import normalise_label
from kenning.local.featureset import FeatureSet, LocalFeatures, concat


@dataclass
class Enrolment:
    """What `enroll` did with each photo it was given."""

    ids: np.ndarray  # index ids of the photos added
    image_ids: list[str]  # their image ids: the given name, or made unique when the index holds it
    positions: list[int]  # which of the given photos were added
    already: list[tuple[int, str]]  # (position, image id) of photos whose bytes this label already has
    count: int  # images the index holds now


def enroll(
    directory: str | Path,
    vectors: np.ndarray,
    image_ids: list[str],
    labels: list[str],
    paths: list[str],
    digests: list[str] | None = None,
    local: Sequence[LocalFeatures] | None = None,
    metadata: dict[str, list[str]] | None = None,
) -> Enrolment:
    """Add images (and, for an index that matches them, their local features) to the side index of
    a saved index without touching its base.

    Checked against the live images under the lock: an image id the index holds is made unique
    (`IMG_0001-<first 8 hex of its sha256>.jpg`), so `forget --id` never removes two photos; bytes
    the index holds under the same label are skipped (reported in `already`), under another label
    refused, and nothing is written."""
    directory = Path(directory)
    digests = list(digests) if digests is not None else [""] * len(image_ids)  # "": no content to compare
    with writer_lock(directory):
        manifest = locked_manifest(directory)
        manifest.check_added(vectors, local)
        delta = read_delta(directory, manifest)
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
            given = {k: [v[i] for i in positions] for k, v in (metadata or {}).items()}
            rows = table_rows(ids, new_ids, *([column[i] for i in positions] for column in pick), given)
            added = np.asarray(vectors, np.float32)[positions]
            added_local = None
            if delta.local is not None and local is not None:
                layout = manifest.descriptor_layout
                added_local = concat([delta.local, FeatureSet.of(ids, [local[i] for i in positions], layout)], layout)
            delta = Delta(concat_tables(delta.table, rows), np.concatenate([delta.vectors, added]), added_local)
            commit_changes(directory, manifest, delta, None, count=count, next_id=manifest.next_id + len(ids))
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
    rows = complete_table(base.filter(hit).to_pandas())
    rows = rows[~rows["id"].isin(read_ids(directory / manifest.removed_file))]
    columns = ["image_id", "label", "sha256"]
    return concat_tables(rows[columns], delta.table[columns])


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
    remaining: int  # images the index answers from after it


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
    with writer_lock(directory):
        manifest = locked_manifest(directory)
        base_table = pd.read_parquet(directory / manifest.base_table, columns=["id", "image_id", "label", "path"])
        delta = read_delta(directory, manifest)
        removed = read_ids(directory / manifest.removed_file)
        live_base = base_table[~base_table["id"].isin(removed)]
        live = concat_tables(live_base, delta.table[["id", "image_id", "label", "path"]]).reset_index(drop=True)
        absent = [f"label {x!r}" for x in labels if not (live["label"] == x).any()]
        absent += [f"image {x!r}" for x in image_ids if not (live["image_id"] == x).any()]
        if absent:
            raise KenningError(f"no {', '.join(absent)} in index {directory}: nothing was forgotten")
        hit = (live["label"].isin(labels) | live["image_id"].isin(image_ids)).to_numpy()
        base_hit = live_base["id"].to_numpy(np.int64)[hit[: len(live_base)]]
        commit_changes(
            directory,
            manifest,
            delta.keep(~hit[len(live_base) :]),
            np.union1d(removed, base_hit).astype(np.int64),
            event=event("forget", labels, int(hit.sum()), image_ids=list(image_ids)),
            count=manifest.count - int(hit.sum()),
        )
        paths = live["path"].to_numpy(dtype=object)
        orphans = sorted(set(paths[hit]) - set(paths[~hit]) - {""})  # no live image names them any more
        deleted = delete_kept(photos_dir, orphans) if photos_dir is not None else []
    return Forgotten(int(hit.sum()), deleted, manifest.count - int(hit.sum()))


def compact(directory: str | Path, progress: bool = False) -> GalleryIndex:
    """Fold enrolments into the base and drop forgotten entries: FAISS adds and removes in place
    where the index type can, otherwise (Annoy, HNSW, refined PQ) the base is rebuilt from its
    stored vectors. Queries see the same answers before and after."""
    directory = Path(directory)
    with writer_lock(directory):
        index = GalleryIndex.load(directory)
        m = index.manifest
        delta_ids = index.delta.table["id"].to_numpy(np.int64)
        keep = ~index.base_table["id"].isin(index.removed).to_numpy()
        base_table = concat_tables(index.base_table[keep], index.delta.table).reset_index(drop=True)
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
        compacted = GalleryIndex(m, base, base_table, empty_delta(m), np.zeros(0, np.int64), index.live_local())
        compacted.save_locked(directory, progress)
    return compacted


def set_rules(
    directory: str | Path, votes: Votes, fused: Fused | None, grouping: Grouping | None = None
) -> IndexManifest:
    """Record the answer rules calibration chose (their thresholds and how each was chosen, with
    local matching the fusion of the stages, and asked for, the batch grouping); only the manifest changes."""
    directory = Path(directory)
    with writer_lock(directory):
        manifest = locked_manifest(directory).with_rules(votes, fused, grouping)
        commit(directory, manifest)
    return manifest
