"""Images -> embeddings -> index -> votes -> answers: the path every command composes.

A Recognizer loads the model and the index once, so a batch of queries (or a long-lived
process) pays for neither again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kenning.config import IndexConfig, check_value
from kenning.data.duplicates import DIGEST, drop_duplicates, file_digest
from kenning.data.readers import UNLABELLED
from kenning.data.splits import catalogue_split
from kenning.embeddings.checkpoint import ModelManifest, load_holdout, load_model
from kenning.embeddings.device import select_device
from kenning.embeddings.inference import Embedded, embed_paths, manifest_transform
from kenning.embeddings.model import EmbeddingNet
from kenning.errors import KenningError, warn
from kenning.eval.calibration import Calibration, calibrate_threshold
from kenning.index import store
from kenning.index.faiss_index import FaissIndex
from kenning.index.store import GalleryIndex
from kenning.index.voting import Prediction, RankedLabels, place_unknown, rank_labels
from kenning.labels import check_label

MAX_UNREADABLE_SHARE = 0.1  # calibration refuses when more of the held-out images than this cannot be read
FEW_CALIBRATION_QUERIES = 20  # below this, calibration warns that its threshold is rough


@dataclass
class Neighbours:
    similarities: np.ndarray  # (n, k), -inf where there is no neighbour
    labels: np.ndarray  # (n, k) of str, "" where there is no neighbour
    ids: np.ndarray | None = None  # (n, k) gallery ids, -1 where there is no neighbour


class Recognizer:
    def __init__(
        self,
        model: EmbeddingNet,
        model_manifest: ModelManifest,
        index: GalleryIndex,
        index_dir: Path | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ):
        index.check_model(model_manifest)
        self.model = model.to(select_device())
        self.model_manifest = model_manifest
        self.transform = manifest_transform(model_manifest)
        self.index = index
        self.index_dir = index_dir
        self.batch_size = batch_size
        self.progress = progress

    @classmethod
    def open(cls, index_dir: str | Path, model_dir: str | Path | None = None, progress: bool = True) -> Recognizer:
        """Load an index and its model (the one recorded in the index, unless `model_dir` is given)."""
        index = GalleryIndex.load(index_dir)
        model, manifest = load_model(model_dir or index_model_dir(Path(index_dir), index.manifest))
        return cls(model, manifest, index, Path(index_dir), progress=progress)

    def configure(self, k: int | None = None, power: float | None = None, search_params: str | None = None) -> None:
        """Voting and search settings for this session only; the saved index keeps its own."""
        if k is not None:
            self.index.manifest.k = check_value("index.k", k)
        if power is not None:
            self.index.manifest.power = check_value("index.power", float(power))
        if search_params is not None:
            self.index.set_search_params(search_params)

    @property
    def unknown_label(self) -> str:
        return self.index.manifest.unknown_label

    def embed(self, paths: Sequence[str]) -> Embedded:
        return embed_paths(
            self.model,
            paths,
            self.transform,
            batch_size=self.batch_size,
            flip_tta=self.index.manifest.flip_tta,
            progress=self.progress,
        )

    def neighbours(self, vectors: np.ndarray, k: int | None = None, exclude: np.ndarray | None = None) -> Neighbours:
        sims, ids = self.index.search(vectors, k or self.index.manifest.k, exclude)
        return Neighbours(sims, self.index.labels_of(ids), ids)

    def rank(self, neighbours: Neighbours) -> list[RankedLabels]:
        power = self.index.manifest.power
        return [rank_labels(s, lab, power) for s, lab in zip(neighbours.similarities, neighbours.labels, strict=True)]

    def predict(self, vectors: np.ndarray, exclude: np.ndarray | None = None) -> list[Prediction]:
        return self.answer(self.neighbours(vectors, exclude=exclude))

    def answer(self, neighbours: Neighbours, threshold: float | str | None = "index") -> list[Prediction]:
        """Top-5 answers from the index's k nearest; threshold "index" is the calibrated one, None never
        answers unknown."""
        threshold = self.index.manifest.threshold if threshold == "index" else threshold
        return [place_unknown(r, threshold, self.unknown_label) for r in self.vote(neighbours)]

    def vote(self, neighbours: Neighbours) -> list[RankedLabels]:
        """Labels ranked by the votes of the index's k nearest (of however many were searched)."""
        k = self.index.manifest.k
        return self.rank(Neighbours(neighbours.similarities[:, :k], neighbours.labels[:, :k]))

    def query(self, paths: Sequence[str]) -> list[Prediction | str]:
        """One answer per path, or the error line for a path that could not be read."""
        embedded = self.embed(paths)
        predictions = iter(self.predict(embedded.vectors)) if len(embedded.vectors) else iter(())
        errors = iter(embedded.errors)
        return [next(predictions) if ok else next(errors) for ok in embedded.ok]

    def enroll(self, paths: Sequence[str], label: str, image_ids: Sequence[str] | None = None) -> EnrollResult:
        """Add photos of `label` to the saved index (its side index: no rebuild, no retraining); the
        new identity answers queries at once."""
        if self.index_dir is None:
            raise KenningError("enroll needs an index saved in a directory")
        _check_label(label, self.unknown_label)
        result = _enroll_embedded(self.index_dir, self.embed(paths), paths, label, image_ids)
        self.index.refresh(self.index_dir)
        return result


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
) -> EnrollResult:
    """`enroll` without loading the gallery vectors (gigabytes at a million images): only the model
    and the manifest."""
    manifest = store.read_index_manifest(Path(index_dir))
    _check_label(label, manifest.unknown_label)
    model, model_manifest = load_model(model_dir or index_model_dir(Path(index_dir), manifest))
    store.check_model(manifest, model_manifest)
    embedded = embed_paths(
        model.to(select_device()), paths, manifest_transform(model_manifest), flip_tta=manifest.flip_tta, progress=False
    )
    return _enroll_embedded(Path(index_dir), embedded, paths, label, image_ids)


def index_model_dir(index_dir: Path, manifest: store.IndexManifest) -> str:
    """The model an index was built with: where it was, or where it is relative to the index
    (the two folders moved together); the fingerprint check catches any other model."""
    if os.path.exists(manifest.model_dir) or not manifest.model_dir_relative:
        return manifest.model_dir
    moved = os.path.normpath(index_dir.resolve() / manifest.model_dir_relative)
    return moved if os.path.exists(moved) else manifest.model_dir


def _check_label(label: str, unknown_label: str) -> None:
    check_label(label, "--label")
    if label == unknown_label:
        raise KenningError(f"'{label}' is the index's unknown label and cannot be enrolled")


def _enroll_embedded(
    index_dir: Path, embedded: Embedded, paths: Sequence[str], label: str, image_ids: Sequence[str] | None
) -> EnrollResult:
    if not embedded.ok.any():
        raise KenningError(
            f"none of the {len(paths)} image(s) could be read, nothing was enrolled: {'; '.join(embedded.errors)}"
        )
    positions = np.flatnonzero(embedded.ok)
    names = [str(i) for i in (image_ids or [Path(p).name for p in paths])]
    kept = [str(Path(paths[i]).resolve()) for i in positions]
    done = store.enroll(
        index_dir,
        embedded.vectors,
        [names[i] for i in positions],
        [label] * len(kept),
        kept,
        [file_digest(p) for p in kept],
    )
    return EnrollResult(
        added=done.image_ids,
        already=[(str(paths[positions[i]]), image_id) for i, image_id in done.already],
        errors=embedded.errors,
        total=done.count,
    )


def build_index(
    model_dir: str | Path,
    gallery: pd.DataFrame,
    cfg: IndexConfig,
    out: str | Path,
    progress: bool = True,
    calibrate: bool = True,
) -> tuple[GalleryIndex, Calibration | None]:
    """Embed the labelled gallery images, index them (type chosen by size unless given), calibrate
    the unknown threshold (unless given, or not `calibrate`: a closed-set evaluation), save to `out`."""
    store.check_index_dir(out)  # before hours of embedding, not after
    model, manifest = load_model(model_dir)
    holdout = _readable_holdout(model_dir, manifest.fingerprint) if cfg.threshold is None and calibrate else None
    gallery = gallery[gallery["label"] != UNLABELLED]
    if gallery.empty:
        raise KenningError("the gallery has no labelled images to index")
    if (gallery["label"] == cfg.unknown_label).any():
        raise KenningError(
            f"the gallery labels images {cfg.unknown_label!r}, the index's unknown label: an answer could not "
            "tell them from 'no match'; rename them or set --unknown-label"
        )
    gallery = drop_duplicates(gallery, "gallery")
    index = GalleryIndex.new(manifest, model_dir, cfg, size=len(gallery))
    index.manifest.model_dir_relative = os.path.relpath(Path(model_dir).resolve(), Path(out).resolve())
    recognizer = Recognizer(model, manifest, index, batch_size=cfg.batch_size, progress=progress)
    embedded = recognizer.embed(gallery["path"].tolist())
    rows = gallery[embedded.ok]
    index.add(
        embedded.vectors,
        rows["image_id"].tolist(),
        rows["label"].tolist(),
        rows["path"].tolist(),
        rows[DIGEST].tolist(),
        progress=progress,
    )
    index.save(out, progress=progress)  # first, so Annoy builds its trees on disk, not in memory
    calibration = None
    if holdout is not None:  # identities in the gallery are not new to it: they cannot calibrate
        holdout = holdout[~holdout["label"].isin(set(index.table["label"]))]
        holdout = holdout[~holdout["image_id"].isin(set(index.table["image_id"]))]
        if not holdout.empty:  # else no threshold: unknown is never answered
            calibration = calibrate_on_holdout(recognizer, holdout, cfg.calibrate, cfg.target_far)
            index.manifest = store.set_threshold(out, calibration.threshold, calibration.to_dict())
    return index, calibration


def _readable_holdout(model_dir: str | Path, fingerprint: str) -> pd.DataFrame | None:
    """The model's held-out images, refused up front (before the gallery is embedded) when too many
    of their files are gone: a model moved without its data, or data deleted."""
    holdout = load_holdout(model_dir)
    if holdout is None or holdout.empty:
        return holdout
    missing = [p for p in holdout["path"] if not os.path.isfile(p)]
    _refuse_unreadable_holdout(missing, len(holdout), "are missing", fingerprint)
    return holdout


def _refuse_unreadable_holdout(bad: list[str], total: int, what: str, model: str) -> None:
    """A threshold calibrated on a held-out set that is mostly gone (data moved, deleted) would be
    silently meaningless: refuse it; a few bad images are only a warning."""
    if len(bad) > MAX_UNREADABLE_SHARE * total:
        raise KenningError(
            f"cannot calibrate the unknown threshold: {len(bad)} of {total} held-out images of model {model} {what} "
            f"(first: {bad[0]}); put the data where the model's holdout.csv says, or pass --threshold"
        )
    if bad:
        warn(f"calibrating without {len(bad)} of {total} held-out images that {what}")


def calibrate_on_holdout(
    recognizer: Recognizer, holdout: pd.DataFrame, objective: str = "map@5", target_far: float = 0.05
) -> Calibration:
    """Protocol B on the held-out identities: the real gallery plus their enrolled images form the
    catalogue, their other images (and every image of the new ones) probe it."""
    enrolled, queries = catalogue_split(holdout)
    emb_enrolled = recognizer.embed(enrolled["path"].tolist())
    emb_queries = recognizer.embed(queries["path"].tolist())
    unreadable, total = emb_enrolled.errors + emb_queries.errors, len(enrolled) + len(queries)
    _refuse_unreadable_holdout(unreadable, total, "could not be read", recognizer.model_manifest.fingerprint)
    queries = queries[emb_queries.ok]
    enrolled_labels = enrolled["label"].to_numpy(dtype=object)[emb_enrolled.ok].astype(str)
    k = recognizer.index.manifest.k
    main = recognizer.neighbours(emb_queries.vectors, k)
    side = FaissIndex.create(recognizer.index.manifest.embedding_dim, "Flat")
    side.add(emb_enrolled.vectors, np.arange(len(emb_enrolled.vectors)))
    side_sims, side_ids = side.search(emb_queries.vectors, k)
    side_labels = (
        np.where(side_ids >= 0, enrolled_labels[np.maximum(side_ids, 0)], "")
        if len(enrolled_labels)
        else np.full(side_ids.shape, "")
    )
    merged = merge_neighbours(main, Neighbours(side_sims, side_labels), k)
    known = set(enrolled_labels)
    unknown = recognizer.unknown_label
    actual = [lab if lab in known else unknown for lab in queries["label"]]
    n_new = actual.count(unknown)
    if n_new == 0 or n_new == len(actual):
        raise KenningError(
            f"cannot calibrate the unknown threshold: the held-out identities give {len(actual) - n_new} known and "
            f"{n_new} new queries, and a threshold needs both; pass --threshold"
        )
    if len(actual) < FEW_CALIBRATION_QUERIES:
        warn(f"the unknown threshold is calibrated on only {len(actual)} held-out queries: a rough estimate")
    return calibrate_threshold(recognizer.rank(merged), actual, unknown, objective, target_far)


def merge_neighbours(a: Neighbours, b: Neighbours, k: int) -> Neighbours:
    """Top-k of two neighbour lists searched in separate indexes, by similarity."""
    sims = np.concatenate([a.similarities, b.similarities], axis=1)
    labels = np.concatenate([a.labels.astype(object), b.labels.astype(object)], axis=1)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return Neighbours(np.take_along_axis(sims, order, 1), np.take_along_axis(labels, order, 1))
