"""Score an index on labelled query images: retrieval, Kaggle and open-set figures.

A query that is itself in the gallery (by image id, or by the same bytes under another name) is
matched leave-one-out: its own entry is excluded, and its stored vector is reused (the same
embedding the model gives it); a copy of it can never count as its match. Its right answer is its
label when another gallery image has that label, else the unknown label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kenning.atomic import atomic_save, atomic_write_json
from kenning.data.duplicates import DIGEST, file_digests
from kenning.data.readers import UNLABELLED
from kenning.errors import KenningError
from kenning.eval.metrics import (
    average_precision_at_k,
    global_average_precision,
    map_at_k,
    recall_at_k,
    retrieval_precision,
)
from kenning.eval.open_set import false_accept_rate, known_unknown_auroc
from kenning.index.voting import Prediction, RankedLabels, place_unknown

if TYPE_CHECKING:
    from kenning.recognizer import Recognizer

MAX_R = 1000  # R-precision / mAP@R: queries with more same-label gallery images than this are left out
SHOWN = 5  # neighbours kept per query for the report's retrieval grid


@dataclass
class EvalResult:
    metrics: dict[str, float | int | str | None]
    per_query: pd.DataFrame  # one row per query: truth, answers, similarities, correctness
    ranked: list[RankedLabels] = field(repr=False)  # votes before unknown is placed: threshold sweeps
    neighbour_paths: np.ndarray = field(repr=False)  # (n, SHOWN) image paths of the nearest gallery images
    neighbour_labels: np.ndarray = field(repr=False)
    neighbour_sims: np.ndarray = field(repr=False)
    unknown_label: str = "unknown"
    calibration: dict = field(default_factory=dict)  # how the index's threshold was chosen, with its curve


def evaluate(recognizer: Recognizer, queries: pd.DataFrame, closed_set: bool = False) -> EvalResult:
    """Open set (default): unknown placed by the index's threshold. Closed set: queries without a
    gallery match are left out and unknown is never answered (protocol A's pure retrieval figures)."""
    if queries.empty:
        raise KenningError("no query images to evaluate")
    index = recognizer.index
    digests = queries[DIGEST].tolist() if DIGEST in queries else file_digests(queries["path"].tolist())
    own_ids = index.ids_of_images(queries["image_id"].tolist(), digests)
    vectors = np.zeros((len(queries), index.manifest.embedding_dim), dtype=np.float32)
    ok = np.ones(len(queries), dtype=bool)
    in_gallery = own_ids >= 0
    vectors[in_gallery] = index.vectors_of(own_ids[in_gallery])
    if (~in_gallery).any():
        embedded = recognizer.embed(queries.loc[~in_gallery, "path"].tolist())
        positions = np.flatnonzero(~in_gallery)
        vectors[positions[embedded.ok]] = embedded.vectors
        ok[positions[~embedded.ok]] = False
    queries, vectors, own_ids = queries[ok].reset_index(drop=True), vectors[ok], own_ids[ok]

    unknown = recognizer.unknown_label
    counts = index.label_counts()
    own_labels = index.labels_of(own_ids)
    available = np.array([counts.get(lab, 0) for lab in queries["label"]]) - (own_labels == queries["label"].to_numpy())
    available = np.where(queries["label"].to_numpy() == UNLABELLED, 0, available)
    if closed_set:
        keep = available > 0
        queries, vectors, own_ids, available = queries[keep], vectors[keep], own_ids[keep], available[keep]
        if queries.empty:
            raise KenningError("no query has a match in the gallery; closed-set evaluation needs some")
    known = available > 0
    actual = np.where(known, queries["label"].to_numpy(dtype=object), unknown).astype(str)

    r_max = int(available[available <= MAX_R].max(initial=0))
    width = min(max(index.manifest.k, SHOWN, r_max), len(index))
    neighbours = recognizer.neighbours(vectors, width, exclude=own_ids)
    threshold = None if closed_set else index.manifest.threshold
    ranked = recognizer.vote(neighbours)
    predictions = [place_unknown(r, threshold, unknown) for r in ranked]
    scored_r = known & (available <= MAX_R)
    precision = retrieval_precision(neighbours.labels[scored_r][:, :r_max], actual[scored_r], available[scored_r])
    answers = answer_metrics(actual, known, predictions, queries["image_id"].tolist(), unknown, threshold)
    metrics: dict[str, float | int | str | None] = {
        "queries": len(queries),
        "known_queries": int(known.sum()),
        "unknown_queries": int((~known).sum()),
        "gallery_size": len(index),
        "threshold": threshold,
        "calibrated_for": index.manifest.calibration.get("objective") if threshold is not None else None,
        "recall@1": recall_at_k(actual[known], neighbours.labels[known], 1) if known.any() else None,
        "recall@5": recall_at_k(actual[known], neighbours.labels[known], 5) if known.any() else None,
        **{key: (None if np.isnan(value) else value) for key, value in precision.items()},
        **answers,
    }
    top = np.array([p.labels[0] if p.labels else unknown for p in predictions], dtype=object)
    per_query = pd.DataFrame(
        {
            "image_id": queries["image_id"].to_numpy(),
            "path": queries["path"].to_numpy(),
            "actual": actual,
            "known": known,
            "gallery_images": available,
            "predicted": [" ".join(p.labels) for p in predictions],
            "confidence": [_top_confidence(p) for p in predictions],
            "best_similarity": [p.best_similarity for p in predictions],
            "correct": top == actual,
            "ap@5": [average_precision_at_k(a, p.labels) for a, p in zip(actual, predictions, strict=True)],
        }
    )
    return EvalResult(
        metrics,
        per_query,
        ranked,
        index.paths_of(neighbours.ids[:, :SHOWN]),
        neighbours.labels[:, :SHOWN],
        neighbours.similarities[:, :SHOWN],
        unknown,
        index.manifest.calibration if threshold is not None else {},
    )


def answer_metrics(
    actual: np.ndarray,
    known: np.ndarray,
    predictions: Sequence[Prediction],
    query_ids: Sequence[str],
    unknown_label: str,
    threshold: float | None,
) -> dict[str, float | None]:
    """The figures of a system's answers, whatever produced them (k-NN voting, a classifier, a rule):
    Kaggle MAP@5 and GAP (the first answer, no prediction when it is unknown), accuracy on known and
    on unknown queries, AUROC of the best-match score and the false-accept rate at `threshold`."""
    top = np.array([p.labels[0] if p.labels else unknown_label for p in predictions], dtype=object)
    best = np.array([p.best_similarity for p in predictions], dtype=np.float64)
    return {
        "map@5": map_at_k(list(actual), [p.labels for p in predictions]),
        "gap": global_average_precision(
            [a if k else None for a, k in zip(actual, known, strict=True)],
            [None if t == unknown_label else t for t in top],
            [_top_confidence(p) for p in predictions],
            query_ids,
        ),
        "known_accuracy": float(np.mean(top[known] == actual[known])) if known.any() else None,
        "unknown_accuracy": float(np.mean(top[~known] == unknown_label)) if (~known).any() else None,
        "auroc_known_vs_unknown": known_unknown_auroc(best, known),
        "false_accept_rate": false_accept_rate(best, known, threshold),
    }


def _top_confidence(prediction: Prediction) -> float:
    conf = prediction.confidences[0] if prediction.confidences else None
    return 0.0 if conf is None else conf


def write_eval(result: EvalResult, out: str | Path) -> None:
    out = Path(out)
    atomic_write_json(out / "metrics.json", result.metrics)
    atomic_save(out / "predictions.csv", lambda p: result.per_query.to_csv(p, index=False))


def format_metrics(metrics: dict[str, float | int | str | None]) -> str:
    width = max(map(len, metrics))
    lines = []
    for key, value in metrics.items():
        shown = "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)
