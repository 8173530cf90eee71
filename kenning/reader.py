"""Images -> probes, the first stage of the query path: a query image's embedding (with the
index's flip setting) and, with local matching, its local features made as the index's were; or
vectors `kenning embed` stored earlier (`StoredReader`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kenning.embeddings.checkpoint import ModelManifest
from kenning.embeddings.device import select_device
from kenning.embeddings.inference import Embedded, embed_paths, manifest_transform
from kenning.embeddings.model import EmbeddingNet
from kenning.embeddings.shards import EmbeddingSet
from kenning.errors import KenningError
from kenning.index.manifest import IndexManifest, check_model
from kenning.local.featureset import LocalFeatures


@dataclass
class Probes:
    """Query images read for both stages; images unreadable for either are left out."""

    vectors: np.ndarray  # (n_ok, dim)
    local: list[LocalFeatures] | None  # (n_ok) with local matching, else None
    ok: np.ndarray  # (n,) bool per input path
    errors: list[str]


class Reader:
    """Query images -> probes for an index: its model's embedding (with the index's flip setting)
    and, with local matching, local features made as the index's were."""

    def __init__(
        self,
        model: EmbeddingNet,
        model_manifest: ModelManifest,
        index_manifest: IndexManifest,
        batch_size: int = 32,
        progress: bool = True,
    ):
        check_model(index_manifest, model_manifest)
        self.model = model.to(select_device())
        self.transform = manifest_transform(model_manifest)
        self.flip_tta = index_manifest.flip_tta
        self.index_manifest = index_manifest
        self.batch_size = batch_size
        self.progress = progress
        self._foreground = None

    def embed(self, paths: Sequence[str]) -> Embedded:
        return embed_paths(
            self.model,
            paths,
            self.transform,
            batch_size=self.batch_size,
            flip_tta=self.flip_tta,
            progress=self.progress,
        )

    def read(self, paths: Sequence[str], local: bool) -> Probes:
        """Embed the images and, when `local`, extract their local features."""
        embedded = self.embed(paths)
        if not local:
            return Probes(embedded.vectors, None, embedded.ok, embedded.errors)
        local_config = self.index_manifest.require_local()
        from kenning.local.features import extract_paths
        from kenning.local.foreground import Foreground

        self._foreground = self._foreground or Foreground()
        readable = [p for p, ok in zip(paths, embedded.ok, strict=True) if ok]
        extracted = extract_paths(readable, local_config, self._foreground, progress=self.progress)
        got = np.array([f is not None for f in extracted.features], bool)
        ok = embedded.ok.copy()
        ok[np.flatnonzero(embedded.ok)[~got]] = False  # changed on disk between the two reads
        features = [f for f in extracted.features if f is not None]
        return Probes(embedded.vectors[got], features, ok, embedded.errors + extracted.errors)


class StoredReader:
    """Probes from vectors embedded earlier by `kenning embed`, looked up by image path: what lets
    `build-index --embeddings` calibrate on the held-out images without loading the model."""

    def __init__(self, embeddings: EmbeddingSet):
        self.embeddings = embeddings

    def embed(self, paths: Sequence[str]) -> Embedded:
        return self.embeddings.lookup(list(paths))

    def read(self, paths: Sequence[str], local: bool) -> Probes:
        if local:
            raise KenningError(
                "local features need the images: build from --data (with --local sift), not --embeddings"
            )
        embedded = self.embed(paths)
        return Probes(embedded.vectors, None, embedded.ok, embedded.errors)
