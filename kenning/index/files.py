"""The commit protocol of an index directory, and the files it writes (label tables, enrolments,
tombstones).

Every write goes to new files of the next generation and commits by renaming the manifest, under
an exclusive lock: a crash leaves the old index, two writers never lose each other's rows. Kenning
deletes only files it made: generation files by their exact names once no manifest names them, and
the temporaries of writers that were killed, each while holding the lock.
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kenning.atomic import atomic_save, atomic_save_array, atomic_write_json, sweep_temporaries
from kenning.data.metadata import ENCOUNTER, VIEWPOINT, with_metadata
from kenning.errors import KenningError, first_line
from kenning.index.history import read_history, write_history
from kenning.index.lock import index_lock
from kenning.index.manifest import (
    GENERATION_FILE,
    MANIFEST,
    TEMPORARY_FILE,
    IndexManifest,
    check_files,
    check_index_dir,
    named_files,
    read_index_manifest,
)
from kenning.local.featureset import FeatureSet

TABLE_COLUMNS = ["id", "image_id", "label", "path", "enrolled_at", "sha256", VIEWPOINT, ENCOUNTER]


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "id" else str) for c in TABLE_COLUMNS})


def complete_table(table: pd.DataFrame) -> pd.DataFrame:
    """A label table read from disk, with the columns older indexes lack: no digest (""), and the
    viewpoint and encounter their file names state (data/metadata.py)."""
    if "sha256" not in table:
        table = table.assign(sha256="")
    return table if VIEWPOINT in table else with_metadata(table)


@dataclass
class Delta:
    """Enrolments since the base was built: their rows, vectors and (local matching on) local features."""

    table: pd.DataFrame
    vectors: np.ndarray
    local: FeatureSet | None = None

    def keep(self, mask: np.ndarray) -> Delta:
        local = None if self.local is None else self.local.select(np.isin(self.local.ids, self.table["id"][mask]))
        return Delta(self.table[mask].reset_index(drop=True), self.vectors[mask], local)


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
        forgotten = len(read_ids(directory / old.removed_file))
        if enrolled or forgotten:
            raise KenningError(
                f"{directory} holds an index with {enrolled} enrolment(s) and {forgotten} forgotten image(s) since "
                "its build: rebuilding it would drop those enrolments and bring the forgotten images back; fold "
                "them in with build-index --compact, build into a new folder, or pass --replace"
            )
        if any(line["operation"] != "forget" for line in read_history(directory)):
            raise KenningError(
                f"{directory} holds an index whose identities were curated since its build (kenning history): "
                "rebuilding it from the data would undo that; export it (kenning export) and build from the "
                "export, build into a new folder, or pass --replace"
            )
    return old.next_id


def writer_lock(directory: Path) -> AbstractContextManager[None]:
    """The lock of an existing index; a mistyped path is refused, not created."""
    read_index_manifest(directory)
    return index_lock(directory)


def locked_manifest(directory: Path) -> IndexManifest:
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


def next_generation(directory: Path, manifest: IndexManifest) -> int:
    on_disk = read_index_manifest(directory).generation if (directory / MANIFEST).is_file() else 0
    return max(manifest.generation, on_disk) + 1


def commit_changes(
    directory: Path,
    manifest: IndexManifest,
    delta: Delta,
    removed: np.ndarray | None,
    base_table: pd.DataFrame | None = None,
    event: dict[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Write the new side index (and tombstones, the base's label table, when they changed) as the
    next generation and commit; `event`: the curation log's line for this change (history.py)."""
    gen = next_generation(directory, manifest)
    changes = {"generation": gen, "delta_file": f"delta-{gen}.parquet", **fields}
    if base_table is not None:  # labels changed (curation): the vectors, and so the base file, stay
        changes["base_table"] = f"base-{gen}.parquet"
        atomic_save(directory / changes["base_table"], lambda p: write_table(base_table, p))
    if event is not None:
        changes["history_file"] = write_history(directory, manifest, gen, event)
    write_delta(directory / changes["delta_file"], delta)
    if manifest.local:
        changes["local_delta_file"] = f"local-delta-{gen}.npz"
        (delta.local or FeatureSet.empty(manifest.descriptor_layout)).save(directory / changes["local_delta_file"])
    if removed is not None:
        changes["removed_file"] = f"removed-{gen}.npy"
        atomic_save_array(directory / changes["removed_file"], removed)
    commit(directory, dataclasses.replace(manifest, **changes))


def commit(directory: Path, manifest: IndexManifest) -> None:
    """The manifest rename is the commit; then the generation files no manifest names any more, and
    temporaries of killed writers, are removed (under the lock: no other writer is running)."""
    keep = named_files(manifest)
    manifest.file_sizes = {name: (directory / name).stat().st_size for name in keep}
    atomic_write_json(directory / MANIFEST, dataclasses.asdict(manifest))
    for path in directory.iterdir():
        name = path.name
        if GENERATION_FILE.match(name) and not any(name == k or name.startswith(f"{k}.") for k in keep):
            path.unlink(missing_ok=True)
    sweep_temporaries(directory, TEMPORARY_FILE)


def table_rows(
    ids: np.ndarray,
    image_ids: list[str],
    labels: list[str],
    paths: list[str],
    digests: list[str] | None = None,
    metadata: dict[str, list[str]] | None = None,
) -> pd.DataFrame:
    """Label-table rows; `metadata`: viewpoint / encounter lists (those not given, or empty, are
    read from the image ids where they state them)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = pd.DataFrame(
        {
            "id": ids,
            "image_id": image_ids,
            "label": labels,
            "path": paths,
            "enrolled_at": now,
            "sha256": list(digests) if digests is not None else "",
            **(metadata or {}),
        }
    )
    return with_metadata(rows)


def concat_tables(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    if not len(b):
        return a
    return pd.concat([a, b], ignore_index=True) if len(a) else b.reset_index(drop=True)


def write_table(table: pd.DataFrame, path: Path) -> None:
    # Dictionary-encoding a column of unique values (ids, digests) makes it several times slower to
    # read, and every enrolment reads image_id and sha256 of the whole base table.
    arrow = pa.Table.from_pandas(table[TABLE_COLUMNS], preserve_index=False)
    pq.write_table(arrow, path, use_dictionary=["label", "path", "enrolled_at", VIEWPOINT])


def write_delta(path: Path, delta: Delta) -> None:
    dim = delta.vectors.shape[1]
    table = pa.Table.from_pandas(delta.table[TABLE_COLUMNS].astype({"id": "int64"}), preserve_index=False)
    flat = pa.array(np.ascontiguousarray(delta.vectors, np.float32).ravel(), pa.float32())
    table = table.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, dim))
    atomic_save(path, lambda p: pq.write_table(table, p))


def read_delta(directory: Path, manifest: IndexManifest) -> Delta:
    table = pq.read_table(directory / manifest.delta_file)
    column = table.column("vector").combine_chunks()
    vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    rows = complete_table(table.drop(["vector"]).to_pandas())
    local = (
        FeatureSet.load(directory / manifest.local_delta_file, manifest.descriptor_layout) if manifest.local else None
    )
    if local is not None and not same_ids(local.ids, rows["id"]):
        raise KenningError(f"index {directory} is inconsistent: the local features of its enrolments do not match them")
    return Delta(rows, vectors.reshape(len(rows), manifest.embedding_dim), local)


def empty_delta(manifest: IndexManifest) -> Delta:
    local = FeatureSet.empty(manifest.descriptor_layout) if manifest.local else None
    return Delta(empty_table(), np.zeros((0, manifest.embedding_dim), np.float32), local)


def same_ids(a: np.ndarray, b: pd.Series) -> bool:
    return np.array_equal(np.sort(np.asarray(a, np.int64)), np.sort(b.to_numpy(np.int64)))


def read_ids(path: Path) -> np.ndarray:
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


def first_ids(table: pd.DataFrame, column: str, keys: list[str]) -> np.ndarray:
    """The id of the first row whose `column` equals each key, -1 where none does."""
    lookup = pd.Series(table["id"].to_numpy(), index=table[column].to_numpy())
    lookup = lookup[~lookup.index.duplicated(keep="first")]
    return lookup.reindex(keys).fillna(-1).to_numpy(dtype=np.int64)
