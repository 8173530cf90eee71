"""Score an index on labelled query images: Recall@K, MAP@5, GAP, known / unknown accuracy.

A query that is itself in the gallery is matched leave-one-out: its own entry is excluded, and
its stored vector is reused (the same embedding the model gives it). Its right answer is its
label when another gallery image has that label, else the unknown label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kenning.atomic import atomic_save, atomic_write_json
from kenning.data.readers import UNLABELLED
from kenning.errors import KenningError
from kenning.eval.metrics import global_average_precision, map_at_k, recall_at_k

if TYPE_CHECKING:
    from kenning.recognizer import Recognizer


@dataclass
class EvalResult:
    metrics: dict[str, float | int | None]
    per_query: pd.DataFrame


def evaluate(recognizer: Recognizer, queries: pd.DataFrame, closed_set: bool = False) -> EvalResult:
    """Open set (default): unknown placed by the index's threshold. Closed set: queries without a
    gallery match are left out and unknown is never answered (protocol A's pure retrieval figures)."""
    if queries.empty:
        raise KenningError("no query images to evaluate")
    index = recognizer.index
    own_ids = index.ids_of_images(queries["image_id"].tolist())
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
    has_match = (queries["label"].to_numpy() != UNLABELLED) & (available > 0)
    if closed_set:
        queries, vectors, own_ids, has_match = (
            queries[has_match],
            vectors[has_match],
            own_ids[has_match],
            has_match[has_match],
        )
        if queries.empty:
            raise KenningError("no query has a match in the gallery; closed-set evaluation needs some")
    actual = np.where(has_match, queries["label"].to_numpy(dtype=object), unknown).astype(str)

    neighbours = recognizer.neighbours(vectors, max(index.manifest.k, 5), exclude=own_ids)
    threshold = None if closed_set else index.manifest.threshold
    predictions = recognizer.answer(neighbours, threshold)
    top = [p.labels[0] if p.labels else unknown for p in predictions]
    gap_pred = [None if t == unknown else t for t in top]
    gap_conf = [p.confidences[0] if p.confidences and p.confidences[0] is not None else 0.0 for p in predictions]
    known = has_match
    metrics: dict[str, float | int | None] = {
        "queries": len(queries),
        "known_queries": int(known.sum()),
        "unknown_queries": int((~known).sum()),
        "gallery_size": len(index),
        "threshold": threshold,
        "recall@1": recall_at_k(actual[known], neighbours.labels[known], 1) if known.any() else None,
        "recall@5": recall_at_k(actual[known], neighbours.labels[known], 5) if known.any() else None,
        "map@5": map_at_k(list(actual), [p.labels for p in predictions]),
        "gap": global_average_precision(
            [a if k else None for a, k in zip(actual, known, strict=True)],
            gap_pred,
            gap_conf,
            queries["image_id"].tolist(),
        ),
        "known_accuracy": float(np.mean(np.array(top)[known] == actual[known])) if known.any() else None,
        "unknown_accuracy": float(np.mean(np.array(top)[~known] == unknown)) if (~known).any() else None,
    }
    per_query = pd.DataFrame(
        {
            "image_id": queries["image_id"].to_numpy(),
            "actual": actual,
            "predicted": [" ".join(p.labels) for p in predictions],
            "confidence": gap_conf,
            "best_similarity": [p.best_similarity for p in predictions],
        }
    )
    return EvalResult(metrics, per_query)


def write_eval(result: EvalResult, out: str | Path) -> None:
    out = Path(out)
    atomic_write_json(out / "metrics.json", result.metrics)
    atomic_save(out / "predictions.csv", lambda p: result.per_query.to_csv(p, index=False))


def format_metrics(metrics: dict[str, float | int | None]) -> str:
    width = max(map(len, metrics))
    lines = []
    for key, value in metrics.items():
        shown = "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)
