"""The index directory: vectors, the label table beside them, and a manifest that commits each save.

Each save writes a new generation of files (`vectors-N.faiss`, `gallery-N.parquet`) and then
replaces `manifest.json` atomically to point at them, so a crash at any moment leaves either the
old index or the new one, never a mix; files of older generations are removed afterwards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kenning.atomic import atomic_save, atomic_write_json
from kenning.embeddings.checkpoint import ModelManifest
from kenning.errors import KenningError
from kenning.index.backend import FaissIndex
from kenning.manifests import read_manifest

FORMAT = "kenning-index/1"
MANIFEST = "manifest.json"
TABLE_COLUMNS = ["id", "image_id", "label", "path", "enrolled_at"]


@dataclass
class IndexManifest:
    model_fingerprint: str
    model_dir: str
    backbone: str
    embedding_dim: int
    backend: str
    unknown_label: str
    k: int
    power: float
    flip_tta: bool
    threshold: float | None = None
    count: int = 0
    generation: int = 0
    vectors_file: str = ""
    table_file: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT


class GalleryIndex:
    def __init__(self, backend: FaissIndex, table: pd.DataFrame, manifest: IndexManifest):
        self.backend = backend
        self.table = table.reset_index(drop=True)
        self.manifest = manifest
        self._refresh_lookup()

    @classmethod
    def new(
        cls, model: ModelManifest, model_dir: str | Path, unknown_label: str, k: int, power: float, flip_tta: bool
    ) -> GalleryIndex:
        manifest = IndexManifest(
            model_fingerprint=model.fingerprint,
            model_dir=str(Path(model_dir).resolve()),
            backbone=model.backbone,
            embedding_dim=model.embedding_dim,
            backend=FaissIndex.name,
            unknown_label=unknown_label,
            k=k,
            power=power,
            flip_tta=flip_tta,
        )
        table = pd.DataFrame({c: pd.Series(dtype="int64" if c == "id" else str) for c in TABLE_COLUMNS})
        return cls(FaissIndex(model.embedding_dim), table, manifest)

    def __len__(self) -> int:
        return len(self.table)

    def add(self, vectors: np.ndarray, image_ids: list[str], labels: list[str], paths: list[str]) -> np.ndarray:
        if vectors.shape[1] != self.manifest.embedding_dim:
            raise KenningError(
                f"embeddings are {vectors.shape[1]}-d but the index holds {self.manifest.embedding_dim}-d vectors"
            )
        start = int(self.table["id"].max()) + 1 if len(self.table) else 0
        ids = np.arange(start, start + len(vectors), dtype=np.int64)
        self.backend.add(vectors, ids)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows = pd.DataFrame({"id": ids, "image_id": image_ids, "label": labels, "path": paths, "enrolled_at": now})
        self.table = pd.concat([self.table, rows], ignore_index=True) if len(self.table) else rows
        self._refresh_lookup()
        return ids

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarities, ids); `exclude[i]` is an id query i must not match (itself), or -1."""
        return self.backend.search(queries, k, exclude)

    def labels_of(self, ids: np.ndarray) -> np.ndarray:
        rows = self._row_of.get_indexer(ids.ravel())
        out = np.where(rows >= 0, self._labels[np.maximum(rows, 0)] if len(self._labels) else "", "")
        return out.reshape(ids.shape)

    def ids_of_images(self, image_ids: list[str]) -> np.ndarray:
        """Index id of each image id, -1 for those not in the gallery."""
        lookup = pd.Series(self.table["id"].to_numpy(), index=self.table["image_id"].to_numpy())
        lookup = lookup[~lookup.index.duplicated(keep="first")]
        return lookup.reindex(image_ids).fillna(-1).to_numpy(dtype=np.int64)

    def label_counts(self) -> pd.Series:
        return self.table["label"].value_counts()

    def check_model(self, model: ModelManifest) -> None:
        if model.fingerprint != self.manifest.model_fingerprint:
            raise KenningError(
                f"index was built with model {self.manifest.model_fingerprint} ({self.manifest.model_dir}), "
                f"not with model {model.fingerprint}: rebuild the index or use its model"
            )

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        previous = _read_manifest(directory) if (directory / MANIFEST).is_file() else None
        gen = max(self.manifest.generation, previous.generation if previous else 0) + 1
        vectors_file, table_file = f"vectors-{gen}.faiss", f"gallery-{gen}.parquet"
        self.backend.save(directory / vectors_file)
        atomic_save(directory / table_file, lambda p: self.table.to_parquet(p, index=False))
        self.manifest = dataclasses.replace(
            self.manifest, generation=gen, count=len(self.table), vectors_file=vectors_file, table_file=table_file
        )
        atomic_write_json(directory / MANIFEST, dataclasses.asdict(self.manifest))
        keep = {vectors_file, table_file}
        for old in [*directory.glob("vectors-*.faiss"), *directory.glob("gallery-*.parquet")]:
            if old.name not in keep:
                old.unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: str | Path) -> GalleryIndex:
        directory = Path(directory)
        manifest = _read_manifest(directory)
        try:
            backend = FaissIndex.load(directory / manifest.vectors_file)
            table = pd.read_parquet(directory / manifest.table_file)
        except Exception as exc:  # faiss raises RuntimeError, pyarrow its own types
            raise KenningError(f"index {directory} is damaged: {str(exc).splitlines()[0]}") from None
        if backend.ntotal != len(table) or len(table) != manifest.count:
            raise KenningError(
                f"index {directory} is inconsistent: {backend.ntotal} vectors, {len(table)} labels, "
                f"manifest says {manifest.count}"
            )
        return cls(backend, table, manifest)

    def _refresh_lookup(self) -> None:
        self._row_of = pd.Index(self.table["id"].to_numpy(dtype=np.int64))
        self._labels = self.table["label"].to_numpy(dtype=object).astype(str)


def _read_manifest(directory: Path) -> IndexManifest:
    return read_manifest(directory / MANIFEST, IndexManifest, FORMAT, "index")
