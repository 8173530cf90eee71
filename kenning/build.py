"""Build an index from a gallery (images, or vectors `kenning embed` wrote) and calibrate it on the
model's held-out identities.

From embeddings the build streams: an IVF / PQ structure trains on a sample, then the chunks are
added one at a time, so memory holds the index and one chunk, never all raw vectors. Approximate
FAISS indexes get their search settings by measured recall (index/tuning.py).

Calibration runs protocol B on held-out training identities, never the gallery's
(holdout_calibration.py): it fits the fusion of the two stages (with local matching) and chooses
the unknown threshold of each path (embedding only, and fused).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from kenning.config import Config, IndexConfig, LocalConfig
from kenning.data.duplicates import DIGEST, drop_duplicates
from kenning.data.metadata import metadata_lists
from kenning.data.readers import UNLABELLED, read_dataset, select_split
from kenning.decision.rules import Fused
from kenning.decision.threshold import Calibration
from kenning.embeddings.checkpoint import load_model
from kenning.embeddings.shards import EmbeddingSet
from kenning.errors import KenningError, warn
from kenning.gallery_calibration import calibrate_within_gallery, check_calibrates_within
from kenning.holdout_calibration import calibrate_on_holdout, readable_holdout
from kenning.index import store
from kenning.index.faiss_index import FaissIndex
from kenning.index.files import claim_for_build
from kenning.index.gallery import GalleryIndex
from kenning.index.tuning import TUNING_QUERIES, exact_top_ids, tune_search_params
from kenning.local.glue import create_glue
from kenning.reader import StoredReader
from kenning.recognizer import Recognizer

WIDE_SPREAD = 0.2  # share of held-out queries the resampled thresholds disagree on, above which build warns


def build_index(
    model_dir: str | Path,
    gallery: pd.DataFrame,
    cfg: IndexConfig,
    out: str | Path,
    progress: bool = True,
    calibrate: bool = True,
    local: LocalConfig | None = None,
    replace: bool = False,
) -> tuple[GalleryIndex, Calibration | None]:
    """Embed the labelled gallery images (and extract their local features when `local.method` is
    not none), index them (type chosen by size unless given), fit the fusion and calibrate the
    unknown threshold (unless given, or not `calibrate`: a closed-set evaluation), save to `out`.
    Over an existing index only when that loses nothing, or with `replace` (`claim_for_build`).
    Returns the index and the calibration of its default path."""
    first_id = claim_for_build(out, replace)  # before hours of embedding, not after
    local_on = local is not None and local.on
    model, manifest = load_model(model_dir)
    thresholds = cfg.threshold is None and calibrate
    holdout = readable_holdout(model_dir, manifest.fingerprint) if thresholds or local_on else None
    gallery = _labelled_gallery(gallery, cfg)
    holdout = _outside(holdout, gallery)
    _check_grouping(cfg, local_on and thresholds and holdout is not None and not holdout.empty)
    if local_on and local.glue:
        create_glue(local.method)  # a family without a learned matcher is refused before any image is read
    if local_on and (holdout is None or holdout.empty):
        check_calibrates_within(gallery["label"])  # before hours of embedding, not after
    index = GalleryIndex.new(
        manifest, model_dir, cfg, len(gallery), dataclasses.asdict(local) if local_on else None, first_id
    )
    index.manifest.model_dir_relative = os.path.relpath(Path(model_dir).resolve(), Path(out).resolve())
    recognizer = Recognizer(model, manifest, index, batch_size=cfg.batch_size, progress=progress)
    probes = recognizer.read(gallery["path"].tolist())
    rows = gallery[probes.ok]
    index.add(
        probes.vectors,
        rows["image_id"].tolist(),
        rows["label"].tolist(),
        rows["path"].tolist(),
        rows[DIGEST].tolist(),
        progress=progress,
        local=probes.local,
        metadata=metadata_lists(rows),
    )
    if _tunable(index, cfg):
        queries = probes.vectors[_sample_rows(len(probes.vectors), TUNING_QUERIES)]
        _tune(index, cfg, queries, iter([(probes.vectors, index.base_table["id"].to_numpy())]))
    index.save(out, progress=progress, replace=replace)  # first, so Annoy builds its trees on disk, not in memory
    if local_on and (holdout is None or holdout.empty):  # a closed-set catalogue: calibrated on itself
        ids = index.base_table["id"].to_numpy()
        fusion = calibrate_within_gallery(recognizer, probes.vectors, probes.local, ids, rows["label"].tolist())
        fused = Fused(fusion, cfg.threshold, None, recognizer.votes.norm)
        index.manifest = store.set_rules(out, dataclasses.replace(recognizer.votes, threshold=cfg.threshold), fused)
        warn(
            "no held-out identities outside the gallery: the fusion is calibrated on the gallery itself "
            "(leave-one-out), and with no new identity to learn from, unknown is never answered unless --threshold"
        )
        return index, None
    return index, _calibrate(recognizer, holdout, cfg, out, local_on, thresholds)


def build_index_from_embeddings(
    embeddings: str | Path,
    cfg: IndexConfig,
    out: str | Path,
    progress: bool = True,
    calibrate: bool = True,
    replace: bool = False,
) -> tuple[GalleryIndex, Calibration | None]:
    """`build_index` from a folder `kenning embed` wrote, without the model: the same index and
    threshold as from the images, built chunk by chunk."""
    first_id = claim_for_build(out, replace)
    _check_grouping(cfg, False)  # no local features from stored vectors
    vectors = EmbeddingSet(embeddings)
    if vectors.manifest.flip_tta != cfg.flip_tta:
        said = "with" if vectors.manifest.flip_tta else "without"
        raise KenningError(f"{embeddings} was embedded {said} flip TTA: build with the same index.flip_tta")
    manifest, model_dir = vectors.manifest.model_manifest, vectors.manifest.model_dir
    thresholds = cfg.threshold is None and calibrate
    gallery = _labelled_gallery(vectors.table("gallery"), cfg)
    holdout = _outside(vectors.table("holdout"), gallery) if thresholds else None
    kept, count = gallery["row"].to_numpy(), len(gallery)
    del gallery  # at millions of images every copy of the rows counts: the index's label table is built anew
    index = GalleryIndex.new(manifest, model_dir, cfg, count, first_id=first_id)
    index.manifest.model_dir_relative = os.path.relpath(Path(model_dir).resolve(), Path(out).resolve())

    def chunks() -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        for rows, found in vectors.chunks("gallery"):
            mask = rows["row"].isin(kept).to_numpy()
            yield rows[mask], found[mask]

    training, tuning = index.base.training_size(), TUNING_QUERIES if _tunable(index, cfg) else 0
    wanted = kept[_sample_rows(count, max(training, tuning))]
    sample = np.zeros((0, manifest.embedding_dim), np.float32)
    if len(wanted):  # one pass for a random sample: the structure learns from it, the tuning queries come from it
        sample = np.concatenate([found[rows["row"].isin(wanted).to_numpy()] for rows, found in chunks()])
    if training:
        index.base.train(sample)
    with tqdm(total=count, desc="indexing", unit="vec", disable=not progress) as bar:

        def counted() -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
            for rows, found in chunks():
                yield found, rows
                bar.update(len(rows))

        index.extend(counted())
    if tuning:
        ids = index.base_table["id"].to_numpy()  # in the order the chunks were added

        def with_ids() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            done = 0
            for _, found in chunks():
                yield found, ids[done : done + len(found)]
                done += len(found)

        _tune(index, cfg, sample[_sample_rows(len(sample), tuning)], with_ids())
    index.save(out, progress=progress, replace=replace)
    recognizer = Recognizer(None, manifest, index, reader=StoredReader(vectors), progress=progress)
    return index, _calibrate(recognizer, holdout, cfg, out, False, thresholds)


def build_from(
    out: str | Path,
    cfg: Config,
    model: str | Path | None = None,
    data: str | Path | None = None,
    embeddings: str | Path | None = None,
    split: str = "all",
    replace: bool = False,
) -> tuple[GalleryIndex, Calibration | None]:
    """`build-index`: from a model and a dataset folder (`split` of it), or from a folder `kenning
    embed` wrote (no model, no images, so no local features)."""
    if embeddings is not None and (model is not None or data is not None):
        raise KenningError("--embeddings holds the model's vectors of the gallery: drop --model and --data")
    if embeddings is not None:
        if cfg.local.on:
            raise KenningError("local features need the images: build from --model and --data with --local sift")
        return build_index_from_embeddings(embeddings, cfg.index, out, replace=replace)
    if model is None or data is None:
        raise KenningError(
            "build-index needs --model and --data, or --embeddings (or --compact with an existing --out)"
        )
    gallery = select_split(read_dataset(data), split)
    return build_index(model, gallery, cfg.index, out, local=cfg.local, replace=replace)


def _check_grouping(cfg: IndexConfig, calibratable: bool) -> None:
    """Batch grouping is calibrated on held-out identities by local matching: refused up front without them."""
    if cfg.grouping and not calibratable:
        raise KenningError(
            "index.grouping needs local matching (--local), held-out identities outside the gallery and a "
            "calibrated unknown threshold (no --threshold)"
        )


def _labelled_gallery(gallery: pd.DataFrame, cfg: IndexConfig) -> pd.DataFrame:
    gallery = gallery[gallery["label"] != UNLABELLED]
    if gallery.empty:
        raise KenningError("the gallery has no labelled images to index")
    if (gallery["label"] == cfg.unknown_label).any():
        raise KenningError(
            f"the gallery labels images {cfg.unknown_label!r}, the index's unknown label: an answer could not "
            "tell them from 'no match'; rename them or set --unknown-label"
        )
    return drop_duplicates(gallery, "gallery")


def _outside(holdout: pd.DataFrame | None, gallery: pd.DataFrame) -> pd.DataFrame | None:
    """Identities in the gallery are not new to it: they cannot calibrate."""
    if holdout is None:
        return None
    holdout = holdout[~holdout["label"].isin(set(gallery["label"]))]
    return holdout[~holdout["image_id"].isin(set(gallery["image_id"]))]


def _sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of a random sample of `size` of n rows (all of them when n <= size)."""
    return np.sort(np.random.default_rng(seed).choice(n, min(n, size), replace=False))


def _tunable(index: GalleryIndex, cfg: IndexConfig) -> bool:
    return cfg.search_params == "auto" and isinstance(index.base, FaissIndex) and not index.base.is_exact


def _tune(
    index: GalleryIndex, cfg: IndexConfig, queries: np.ndarray, chunks: Iterator[tuple[np.ndarray, np.ndarray]]
) -> None:
    """search_params auto on an approximate FAISS index: the fastest setting reaching index.target_recall
    recall@10 on a sample of the gallery's own vectors, recorded in the manifest."""
    k = min(10, index.base.ntotal)
    point = tune_search_params(index.base, queries, exact_top_ids(queries, chunks, k), cfg.target_recall, k)
    if point is None:
        return
    if not point.reached:
        warn(f"no search setting of {index.base.index_type} reached recall@{k} {cfg.target_recall}: kept the best")
    index.manifest.search_params = point.search_params
    index.manifest.operating_point = point.to_dict()


def _calibrate(
    recognizer: Recognizer,
    holdout: pd.DataFrame | None,
    cfg: IndexConfig,
    out: str | Path,
    local_on: bool,
    thresholds: bool,
) -> Calibration | None:
    """Calibrate the saved index at `out` on the held-out identities; its default path's calibration."""
    index = recognizer.index
    if holdout is None or holdout.empty:  # no threshold: unknown is never answered
        return None
    review, bagged = (cfg.review_far, cfg.review_miss), cfg.threshold_choice == "bagged"
    result = calibrate_on_holdout(
        recognizer, holdout, cfg.calibrate, cfg.target_far, thresholds, cfg.resamples, review, bagged, cfg.grouping
    )
    _warn_if_wide(result.main)
    embedding, fused = result.embedding, None
    given = None if local_on else cfg.threshold  # a threshold given with local matching is the fused one
    votes = dataclasses.replace(
        recognizer.votes, threshold=embedding.threshold if embedding else given, calibration=embedding
    )
    if result.fusion is not None:
        threshold = result.fused.threshold if result.fused else cfg.threshold
        fused = Fused(result.fusion, threshold, result.fused, recognizer.votes.norm)
    index.manifest = store.set_rules(out, votes, fused, result.grouping)
    return result.main


def _warn_if_wide(calibration: Calibration | None) -> None:
    """The threshold's spread over bootstrap draws of the held-out identities, said when it is wide."""
    spread = calibration.spread if calibration else None
    if spread is None or spread.uncertain_share <= WIDE_SPREAD:
        return
    low_high = spread.low_high
    where = f" between {low_high[0]:.4g} and {low_high[1]:.4g}" if low_high else ""
    warn(
        f"the unknown threshold is uncertain: resampling the held-out identities puts it{where}, which decides "
        f"{spread.uncertain_share:.0%} of their queries; hold out more identities (train.holdout_fraction)"
    )
