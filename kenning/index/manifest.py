"""An index directory's manifest: what it names and how each value is checked.

Layout (G is a generation number; a manifest names the files of its generation):
- `base-G.faiss` / `base-G.ann`: the bulk of the gallery, written by `build-index` and `--compact`;
- `base-G.parquet`: its label table (id, image_id, label, path, enrolled_at, sha256 of the file);
- `delta-G.parquet`: enrolments since, rows with their vectors (searched exactly in memory);
- `removed-G.npy`: ids of base entries forgotten since;
- `local-base-G.npz` / `local-delta-G.npz` (with local matching on): the local features of the base
  and of the enrolments, by the same ids, so tombstones and compaction apply to both stages;
- `history-G.jsonl`: one line per curation (rename, merge, split, forget): time, operation, labels, counts;
- `manifest.json`: model fingerprint, embedding size, backend, counts, threshold, file names and sizes.

The manifest is read as typed data and every value checked; every file it names must be a regular
file of the size it was committed with, before anything reads it or commits on top of it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kenning.atomic import temporary_name
from kenning.config import LocalConfig, check_value
from kenning.decision.grouping import Grouping
from kenning.decision.rules import Fused, Votes
from kenning.embeddings.checkpoint import ModelManifest
from kenning.errors import KenningError, first_line
from kenning.index.backend import SUFFIX
from kenning.local.extractor import Extractor, create_extractor
from kenning.local.featureset import Layout, LocalFeatures
from kenning.manifests import read_manifest
from kenning.paths import path_kind, require_output_dir

FORMAT = "kenning-index/2"
MANIFEST = "manifest.json"
_GENERATION = (
    r"(?:base-\d+\.(?:faiss|ann|ann\.ids\.npy|parquet)|delta-\d+\.parquet|removed-\d+\.npy"
    r"|local-(?:base|delta)-\d+\.npz|history-\d+\.jsonl)"
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
    normalise: dict[str, Any] | None = None  # the k-NN rule's score normalisation (decision/normalise.py); None: raw
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
    history_file: str = ""  # the curation log (index/history.py); "": nothing curated since the build
    fusion: dict[str, Any] = field(default_factory=dict)  # calibrators of the score parts, and what they were fitted on
    operating_point: dict[str, Any] = field(default_factory=dict)  # search_params tuned by measured recall (tuning.py)
    grouping: dict[str, Any] = field(default_factory=dict)  # how `query --batch --group` joins photos; {}: it cannot
    viewpoints: str = "compatible"  # compatible: match only compatible viewpoints (data/metadata.py); any
    compatible_viewpoints: str = ""  # pairs matched besides equal viewpoints
    uid: str = ""  # made anew by every build: a service notices that its index was rebuilt, not changed
    file_sizes: dict[str, int] = field(default_factory=dict)  # bytes of each file named above: truncation is refused
    format: str = FORMAT

    def require_local(self) -> LocalConfig:
        """The settings its local features were made with (refused in one line when it has none)."""
        if not self.local:
            raise KenningError("this index has no local features: rebuild it with --local sift")
        return LocalConfig(**self.local)

    @property
    def extractor(self) -> Extractor:
        """The family its local features were extracted by (the index must have them)."""
        return create_extractor(self.require_local().method)

    @property
    def descriptor_layout(self) -> Layout:
        return self.extractor.layout

    def check_added(self, vectors: np.ndarray, local: Sequence[LocalFeatures] | None) -> None:
        """Images added to the index: vectors of its size, and their local features when it matches them."""
        check_dim(vectors, self.embedding_dim)
        if self.local and (local is None or len(local) != len(vectors)):
            raise KenningError("this index matches local features: images must come with theirs (one per image)")

    def votes(self) -> Votes:
        """The k-NN vote rule the index answers with (decision/rules.py)."""
        stored = {"k": self.k, "power": self.power, "threshold": self.threshold, "calibration": self.calibration}
        return Votes.from_dict({**stored, "normalise": self.normalise})

    def fused(self) -> Fused | None:
        """The fused rule of local matching, as calibrated at build time; None: none was fitted."""
        local = self.require_local() if self.local else None
        return Fused.from_dict(self.fusion, bool(local and local.verify), bool(local and local.glue))

    def with_rules(self, votes: Votes, fused: Fused | None, grouping: Grouping | None = None) -> IndexManifest:
        """This manifest storing `votes`, `fused` and `grouping` (what their to_dict returns)."""
        stored = {"fusion": fused.to_dict() if fused else {}, "grouping": grouping.to_dict() if grouping else {}}
        return dataclasses.replace(self, **votes.to_dict(), **stored)


def check_dim(vectors: np.ndarray, dim: int) -> None:
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise KenningError(f"embeddings are {vectors.shape[-1]}-d but the index holds {dim}-d vectors")


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
    normalised = manifest.normalise is not None  # a normalised score's threshold is any finite number
    for key in ("k", "power", "unknown_label", "viewpoints", *(() if normalised else ("threshold",))):
        try:
            check_value(f"index.{key}", getattr(manifest, key))
        except KenningError as exc:
            raise damaged(str(exc)) from None
    for key in FILE_FIELDS:
        name = getattr(manifest, key)
        required = key not in OPTIONAL_FILES
        if (name or required) and not GENERATION_FILE.match(name):
            raise damaged(f"{key} {name!r} is not the name of an index file")
    fused = manifest.fusion.get("threshold")
    number = isinstance(fused, int | float) and not isinstance(fused, bool) and math.isfinite(fused)
    if not (fused is None or (number and (normalised or 0 <= fused <= 1))):
        raise damaged("the fused threshold is not a probability" + (" or a number" if normalised else ""))
    try:
        Grouping.from_dict(manifest.grouping)
    except KenningError as exc:
        raise damaged(str(exc)) from None
    if manifest.local:
        try:
            for key, value in dataclasses.asdict(manifest.require_local()).items():
                check_value(f"local.{key}", value)
        except (TypeError, KenningError) as exc:
            raise damaged(f"local matching settings: {first_line(exc)}") from None
    if manifest.backend not in SUFFIX or not manifest.base_file.endswith(SUFFIX[manifest.backend]):
        raise damaged(f"backend {manifest.backend!r} does not match its file {manifest.base_file!r}")
    return manifest


FILE_FIELDS = (
    "base_file", "base_table", "delta_file", "removed_file", "local_base_file", "local_delta_file", "history_file",
)  # fmt: skip
OPTIONAL_FILES = ("local_base_file", "local_delta_file", "history_file")
MAX_DIM = 65_536


def named_files(manifest: IndexManifest) -> list[str]:
    return [name for name in (getattr(manifest, key) for key in FILE_FIELDS) if name]


def check_files(directory: Path, manifest: IndexManifest) -> None:
    """Every file the manifest names is a regular file of the size it was committed with: a FIFO
    would block a reader, and a truncated or replaced file is refused before anything reads it or
    commits on top of it. A missing file raises FileNotFoundError (a concurrent commit may have
    removed it: `GalleryIndex.load` retries)."""
    for name in named_files(manifest):
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


def index_model_dir(index_dir: Path, manifest: IndexManifest) -> str:
    """The model an index was built with: where it was, or where it is relative to the index
    (the two folders moved together); the fingerprint check catches any other model."""
    if os.path.exists(manifest.model_dir) or not manifest.model_dir_relative:
        return manifest.model_dir
    moved = os.path.normpath(index_dir.resolve() / manifest.model_dir_relative)
    return moved if os.path.exists(moved) else manifest.model_dir
