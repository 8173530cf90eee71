"""Score an index on labelled query images: retrieval, Kaggle and open-set figures.

A query that is itself in the gallery (by image id, or by the same bytes under another name) is
matched leave-one-out: its own entry is excluded, and its stored vector is reused (the same
embedding the model gives it); a copy of it can never count as its match. Its right answer is its
label when another gallery image has that label, else the unknown label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kenning.atomic import atomic_save, atomic_write_json
from kenning.data.duplicates import DIGEST, file_digests
from kenning.data.metadata import ENCOUNTER, VIEWPOINT, with_metadata
from kenning.data.readers import UNLABELLED
from kenning.data.splits import sighting_key
from kenning.decision.fusion import pairs
from kenning.decision.threshold import Calibration, new_rate_threshold
from kenning.decision.voting import RankedLabels
from kenning.errors import KenningError
from kenning.metrics.answers import answer_metrics, top_confidence
from kenning.metrics.retrieval import average_precision_at_k, recall_at_k, retrieval_precision

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
    calibration: Calibration | None = None  # how the index's threshold was chosen, with its curve
    local: list | None = field(default=None, repr=False)  # with local matching: each query's LocalScores
    reliability: dict = field(default_factory=dict, repr=False)  # score name -> (predicted, same) of candidate pairs
    local_matches: list = field(default_factory=list, repr=False)  # per query: (gallery path, query xy, gallery xy)
    foregrounds: list = field(default_factory=list, repr=False)  # per query: its foreground map (local matching)


def evaluate(
    recognizer: Recognizer,
    queries: pd.DataFrame,
    closed_set: bool = False,
    exclude_sighting: bool = False,
    new_rate: float | None = None,
) -> EvalResult:
    """Open set (default): unknown placed by the index's threshold. Closed set: queries without a
    gallery match are left out and unknown is never answered (protocol A's pure retrieval figures).
    `exclude_sighting`: a query matches no gallery image of its own sighting (protocol A: nyala's
    `<n>_left/right` photos of one animal share the scene), only images of other sightings.
    `new_rate`: instead of the index's threshold, the one under which that share of the queries is
    answered unknown (decision/threshold.py: new_rate_threshold)."""
    if queries.empty:
        raise KenningError("no query images to evaluate")
    index = recognizer.index
    digests = queries[DIGEST].tolist() if DIGEST in queries else file_digests(queries["path"].tolist())
    own_ids = index.ids_of_images(queries["image_id"].tolist(), digests)
    vectors, local, ok = _probes(recognizer, queries, own_ids)
    queries, own_ids = queries[ok].reset_index(drop=True), own_ids[ok]
    exclude = _sighting_ids(index.table, queries, own_ids) if exclude_sighting else own_ids[:, None]

    unknown = recognizer.unknown_label
    counts = index.label_counts()
    labels = queries["label"].to_numpy()
    excluded_same = (index.labels_of(exclude) == labels[:, None]).sum(1)
    available = np.array([counts.get(lab, 0) for lab in labels]) - excluded_same
    available = np.where(labels == UNLABELLED, 0, available)
    if closed_set:
        keep = available > 0
        queries, vectors, exclude, available = queries[keep], vectors[keep], exclude[keep], available[keep]
        local = None if local is None else [f for f, kept in zip(local, keep, strict=True) if kept]
        if queries.empty:
            raise KenningError("no query has a match in the gallery; closed-set evaluation needs some")
    known = available > 0
    actual = np.where(known, queries["label"].to_numpy(dtype=object), unknown).astype(str)

    r_max = int(available[available <= MAX_R].max(initial=0))
    width = min(max(index.manifest.k, SHOWN, r_max), len(index))
    queries = with_metadata(queries)
    matches = recognizer.match(vectors, local, width, exclude, queries[VIEWPOINT].tolist())
    neighbours = matches.neighbours
    ranked = recognizer.rank(matches)
    if closed_set or new_rate is None:
        threshold = None if closed_set else recognizer.threshold
        calibration = recognizer.calibration if threshold is not None else None
        predictions = recognizer.answer(ranked, None if closed_set else "index")
    else:
        threshold, calibration = new_rate_threshold(ranked, new_rate), None
        predictions = recognizer.answer(ranked, threshold)
    retrieved = neighbours.labels if matches.candidates is None else _ranked_labels(ranked, SHOWN)
    scored_r = known & (available <= MAX_R)
    precision = retrieval_precision(neighbours.labels[scored_r][:, :r_max], actual[scored_r], available[scored_r])
    identities = query_identities(queries)
    answers = answer_metrics(actual, known, predictions, queries["image_id"].tolist(), unknown, threshold, identities)
    metrics: dict[str, float | int | str | None] = {
        "queries": len(queries),
        "known_queries": int(known.sum()),
        "unknown_queries": int((~known).sum()),
        "gallery_size": len(index),
        "threshold": threshold,
        "calibrated_for": calibration.objective if calibration else ("new rate" if threshold is not None else None),
        "review_queries": int(sum(p.decision == "review" for p in predictions)),
        "ranked_by": "fused" if matches.candidates is not None else "embedding",
        "recall@1": recall_at_k(actual[known], retrieved[known], 1) if known.any() else None,
        "recall@5": recall_at_k(actual[known], retrieved[known], 5) if known.any() else None,
        **{key: (None if np.isnan(value) else value) for key, value in precision.items()},
        **answers,
    }
    top = np.array([p.labels[0] if p.labels else unknown for p in predictions], dtype=object)
    per_query = pd.DataFrame(
        {
            "image_id": queries["image_id"].to_numpy(),
            "path": queries["path"].to_numpy(),
            VIEWPOINT: queries[VIEWPOINT].to_numpy(),
            ENCOUNTER: queries[ENCOUNTER].to_numpy(),
            "actual": actual,
            "identity": identities,
            "known": known,
            "gallery_images": available,
            "predicted": [" ".join(p.labels) for p in predictions],
            "confidence": [top_confidence(p) for p in predictions],
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
        calibration,
        matches.local,
        _reliability(recognizer, matches.candidates, actual),
        _local_matches(recognizer, matches.local, local),
        [] if local is None else [f.foreground for f in local],
    )


def query_identities(queries: pd.DataFrame) -> np.ndarray:
    """Each query's true identity, a new one's too (what the balanced open-set score averages over);
    an unlabelled query is an identity of its own."""
    labels = queries["label"].to_numpy(dtype=object)
    own = np.array([f"unlabelled {i}" for i in queries["image_id"]], dtype=object)
    return np.where(labels == UNLABELLED, own, labels)


def _reliability(recognizer: Recognizer, candidates: list | None, actual: np.ndarray) -> dict:
    """Each calibrated score and the fused probability of every (query, candidate identity) pair,
    with whether it is the same identity: what the report's reliability diagram draws."""
    if candidates is None or recognizer.fused is None:
        return {}
    scores, same = pairs(candidates, list(actual))
    fusion = recognizer.fused.fusion
    out = {"fused": (fusion.probability(scores), same)}
    out.update({f"{p} (calibrated)": (c(scores[p]), same) for p, c in fusion.calibrators.items()})
    return out


def _local_matches(recognizer: Recognizer, scores: list | None, local: list | None) -> list:
    """Per query, its best local match: (gallery path, matched query xy, matched gallery xy), or None."""
    if scores is None or local is None:
        return []
    best = np.array([int(s.image_ids[0]) if len(s.image_ids) else -1 for s in scores], np.int64)
    found = best >= 0
    gallery = dict(zip(best[found], recognizer.index.local_of(best[found]), strict=True))
    paths = recognizer.index.paths_of(best)
    out = []
    for i, (s, features) in enumerate(zip(scores, local, strict=True)):
        if best[i] < 0 or best[i] not in s.matches:
            out.append(None)
            continue
        pairs_ = s.matches[best[i]]
        out.append((str(paths[i]), features.keypoints[pairs_[:, 0], :2], gallery[best[i]].keypoints[pairs_[:, 1], :2]))
    return out


def _ranked_labels(ranked: list[RankedLabels], width: int) -> np.ndarray:
    """(n, width) labels in the decision's order, "" padded: with local matching, Recall@K counts
    the fused ranking (the embedding's nearest images still give R-precision and mAP@R)."""
    out = np.full((len(ranked), width), "", dtype=object)
    for i, r in enumerate(ranked):
        out[i, : min(width, len(r.labels))] = r.labels[:width]
    return out


def _probes(
    recognizer: Recognizer, queries: pd.DataFrame, own_ids: np.ndarray
) -> tuple[np.ndarray, list | None, np.ndarray]:
    """Each query's vector (and local features): stored ones for queries that are gallery images
    (the same the model gives them), read for the others; `ok`: which could be read."""
    index = recognizer.index
    vectors = np.zeros((len(queries), index.manifest.embedding_dim), dtype=np.float32)
    local: list | None = [None] * len(queries) if recognizer.use_local else None
    ok = np.ones(len(queries), dtype=bool)
    in_gallery = own_ids >= 0
    vectors[in_gallery] = index.vectors_of(own_ids[in_gallery])
    if local is not None:
        for i, features in zip(np.flatnonzero(in_gallery), index.local_of(own_ids[in_gallery]), strict=True):
            local[i] = features
    if (~in_gallery).any():
        probes = recognizer.read(queries.loc[~in_gallery, "path"].tolist())
        positions = np.flatnonzero(~in_gallery)
        vectors[positions[probes.ok]] = probes.vectors
        if local is not None:
            for i, features in zip(positions[probes.ok], probes.local, strict=True):
                local[i] = features
        ok[positions[~probes.ok]] = False
    return vectors[ok], None if local is None else [f for f, kept in zip(local, ok, strict=True) if kept], ok


def _sighting_ids(gallery: pd.DataFrame, queries: pd.DataFrame, own_ids: np.ndarray) -> np.ndarray:
    """(n, m) gallery ids of each query's own sighting (same label and sighting key), itself
    included, -1 padded."""
    key = gallery["label"].astype(str) + "\x00" + gallery["image_id"].map(lambda i: repr(sighting_key(i)))
    ids_by_key = gallery["id"].groupby(key.to_numpy()).agg(list).to_dict()
    query_key = queries["label"].astype(str) + "\x00" + queries["image_id"].map(lambda i: repr(sighting_key(i)))
    rows = [sorted({*ids_by_key.get(k, []), int(own)} - {-1}) for k, own in zip(query_key, own_ids, strict=True)]
    width = max(1, max(map(len, rows), default=1))
    return np.array([r + [-1] * (width - len(r)) for r in rows], np.int64)


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
