"""Enrolment: photos of an identity added to a saved index, without retraining or rebuilding. The
photos are read like queries (reader.py) and committed by the index store (index/store.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kenning.data.duplicates import file_digest
from kenning.data.metadata import check_metadata
from kenning.embeddings.checkpoint import load_model
from kenning.errors import KenningError
from kenning.index import store
from kenning.index.manifest import index_model_dir, read_index_manifest
from kenning.labels import check_enrol_label
from kenning.reader import Probes, Reader


@dataclass
class EnrollResult:
    added: list[str]  # image ids given to the photos added (forget --id takes them)
    already: list[tuple[str, str]]  # (path, image id) of photos whose bytes the label already had
    errors: list[str]  # one line per photo that could not be read
    total: int  # images in the index now


def enroll_images(
    index_dir: str | Path,
    paths: Sequence[str],
    label: str,
    model_dir: str | Path | None = None,
    image_ids: Sequence[str] | None = None,
    metadata: dict[str, str] | None = None,
) -> EnrollResult:
    """`enroll` without loading the gallery (gigabytes at a million images): only the model, the
    manifest and, for an index that matches them, the local-feature extractor."""
    manifest = read_index_manifest(Path(index_dir))
    label = check_enrol_label(label, manifest.unknown_label)
    for key, value in (metadata or {}).items():  # refused before the model loads
        check_metadata([value], key)
    model, model_manifest = load_model(model_dir or index_model_dir(Path(index_dir), manifest))
    probes = Reader(model, model_manifest, manifest, progress=False).read(paths, bool(manifest.local))
    return enroll_probes(Path(index_dir), probes, paths, label, image_ids, metadata)


def enroll_probes(
    index_dir: Path,
    probes: Probes,
    paths: Sequence[str],
    label: str,
    image_ids: Sequence[str] | None,
    metadata: dict[str, str] | None = None,
) -> EnrollResult:
    """The readable photos into the saved index, in one commit; `metadata`: the viewpoint and the
    encounter of all of them (those not given are read from the file names, data/metadata.py)."""
    if not probes.ok.any():
        raise KenningError(
            f"none of the {len(paths)} image(s) could be read, nothing was enrolled: {'; '.join(probes.errors)}"
        )
    positions = np.flatnonzero(probes.ok)
    names = [str(i) for i in (image_ids or [Path(p).name for p in paths])]
    kept = [str(Path(paths[i]).resolve()) for i in positions]
    done = store.enroll(
        index_dir,
        probes.vectors,
        [names[i] for i in positions],
        [label] * len(kept),
        kept,
        [file_digest(p) for p in kept],
        local=probes.local,
        metadata={key: [value] * len(kept) for key, value in (metadata or {}).items() if value},
    )
    return EnrollResult(
        added=done.image_ids,
        already=[(str(paths[positions[i]]), image_id) for i, image_id in done.already],
        errors=probes.errors,
        total=done.count,
    )
