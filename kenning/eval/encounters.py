"""Figures of encounter answers: the photos an evaluation answered one by one, answered per
encounter (decision/encounters.py) and scored like single queries."""

from __future__ import annotations

import numpy as np

from kenning.data.metadata import ENCOUNTER, VIEWPOINT
from kenning.decision.encounters import combine
from kenning.decision.voting import place_unknown
from kenning.errors import KenningError
from kenning.eval.evaluate import EvalResult
from kenning.metrics.answers import answer_metrics
from kenning.metrics.retrieval import recall_at_k


def encounter_metrics(result: EvalResult) -> dict[str, float | int | None]:
    """Recall@1/5, MAP@5, GAP, known / new accuracy and the balanced open-set score of one answer per
    encounter; a photo with no encounter is one of its own. An encounter's photos must all be of one identity."""
    q = result.per_query.reset_index(drop=True)
    keys = q[ENCOUNTER].where(q[ENCOUNTER] != "", "\x00" + q["image_id"].astype(str))
    groups = list(q.groupby(keys, sort=True).indices.items())
    actual, answers, ranked = [], [], []
    for name, rows in groups:
        truths = set(q["actual"].iloc[rows])
        if len(truths) > 1:
            raise KenningError(f"encounter {name!r} holds photos of {len(truths)} identities: one animal per encounter")
        combined = combine([result.ranked[i] for i in rows], q[VIEWPOINT].iloc[rows].tolist())
        actual.append(truths.pop())
        ranked.append(combined.labels)
        answers.append(place_unknown(combined, result.metrics["threshold"], result.unknown_label))
    truth = np.array(actual, dtype=object)
    known = truth != result.unknown_label
    names = [str(name) for name, _ in groups]
    identities = [q["identity"].iloc[rows[0]] if "identity" in q else name for name, rows in groups]
    threshold = result.metrics["threshold"]
    figures = answer_metrics(truth, known, answers, names, result.unknown_label, threshold, identities)
    top = np.full((len(ranked), 5), "", dtype=object)  # each encounter's first five labels, "" padded
    for i, labels in enumerate(ranked):
        top[i, : min(5, len(labels))] = labels[:5]
    recall = {f"recall@{k}": recall_at_k(list(truth[known]), top[known], k) if known.any() else None for k in (1, 5)}
    kept = ("map@5", "gap", "known_accuracy", "unknown_accuracy", "baks", "baus", "balanced")
    return {"encounters": len(groups), **recall, **{k: figures[k] for k in kept}}
