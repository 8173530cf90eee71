"""Answers as programs read them: one record per photo, the same for `query --json` and the service.

Each answer: its label, whether it is the unknown answer (placed by the threshold, so it has no
confidence), its confidence and, with local matching, its score parts; then the decision (match,
review: between the review band's thresholds, for a person; new), the best match's score, what that
score is (the rule's: a similarity or a fused probability, normalised or not) and the threshold it
was held to. The Kaggle files of `query --batch` are written from the same predictions (eval/submission.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kenning.data.metadata import from_name
from kenning.decision.encounters import combine, encounter_rows
from kenning.decision.rules import Rule
from kenning.decision.threshold import new_rate_threshold
from kenning.decision.voting import Prediction

if TYPE_CHECKING:
    from kenning.recognizer import Recognizer


def answer_record(prediction: Prediction, rule: Rule, unknown_label: str) -> dict[str, Any]:
    parts = prediction.parts or [None] * len(prediction.labels)
    answers = [
        {
            "label": label,
            "unknown": label == unknown_label and confidence is None,
            "confidence": None if confidence is None else round(float(confidence), 4),
            **({"scores": part} if part else {}),
        }
        for label, confidence, part in zip(prediction.labels, prediction.confidences, parts, strict=True)
    ]
    return {
        "answers": answers,
        "unknown": bool(answers and answers[0]["unknown"]),
        "decision": prediction.decision,  # match, review (for a person to decide) or new
        "best_similarity": round(float(prediction.best_similarity), 4),
        "score": rule.score,
        "threshold": rule.threshold,
    }


def image_records(
    images: Sequence[str], answers: Sequence[Prediction | str], rule: Rule, unknown_label: str
) -> list[dict[str, Any]]:
    """`query`'s records: per image its answers (under "predictions"), or the line why it could not be read."""
    records = []
    for image, answer in zip(images, answers, strict=True):
        if isinstance(answer, str):
            records.append({"image": image, "error": answer})
            continue
        record = answer_record(answer, rule, unknown_label)
        records.append({"image": image, "predictions": record.pop("answers"), **record})
    return records


def answer_encounters(
    recognizer: Recognizer,
    paths: Sequence[str],
    views: Sequence[str],
    encounters: Sequence[str],
    new_rate: float | None = None,
    top: int = 5,
) -> tuple[list[Prediction | str], dict[str, Prediction]]:
    """Each photo's own answer (or the line why it could not be read), and one answer per encounter
    (decision/encounters.py) from the readable photos of it; a photo with no encounter ("") is none.
    `new_rate`: the threshold is the batch's own, under which that share of its photos is new.
    `top`: answers listed per photo (the k-NN rule ranks the labels of its k neighbours only)."""
    probes = recognizer.read(paths)
    readable = np.flatnonzero(probes.ok)
    views_read = [views[i] for i in readable]
    ranked = recognizer.rank(recognizer.match(probes.vectors, probes.local, views=views_read)) if len(readable) else []
    threshold = "index" if new_rate is None else new_rate_threshold(ranked, new_rate)
    photos, errors = iter(recognizer.answer(ranked, threshold, top)), iter(probes.errors)
    each = [next(photos) if ok else next(errors) for ok in probes.ok]
    groups = encounter_rows([encounters[i] for i in readable])
    combined = [combine([ranked[r] for r in rows], [views_read[r] for r in rows]) for rows in groups.values()]
    return each, dict(zip(groups, recognizer.answer(combined, threshold, top), strict=True))


def answer_images(
    recognizer: Recognizer,
    paths: Sequence[str],
    viewpoint: str | None = None,
    encounter: bool = False,
    candidates: int = 5,
) -> list[dict[str, Any]]:
    """`query`'s records: one per photo, or with `encounter` one for all of them with each photo's
    own answers under "photos". `viewpoint`: of every photo (default: what each file name states).
    `candidates`: answers listed per photo, ranked, for a person to choose from."""
    views = [from_name(p)[0] if viewpoint is None else viewpoint.strip().lower() for p in paths]
    groups = ["encounter" if encounter else ""] * len(paths)
    recognizer.times.reset()
    each, together = answer_encounters(recognizer, paths, views, groups, top=candidates)
    seconds = recognizer.times.rounded()  # the call's stages, all its photos together
    if not encounter:
        records = image_records(paths, each, recognizer.rule, recognizer.unknown_label)
        return [{**r, "viewpoint": v, "seconds": seconds} for r, v in zip(records, views, strict=True)]
    records = image_records(paths, each, recognizer.rule, recognizer.unknown_label)
    photos = [{**r, "viewpoint": v} for r, v in zip(records, views, strict=True)]
    if not together:
        return [{"image": "encounter", "images": list(paths), "error": "none of the photos could be read"}]
    record = answer_record(together["encounter"], recognizer.rule, recognizer.unknown_label)
    encounter_record = {"image": "encounter", "images": list(paths), "predictions": record.pop("answers"), **record}
    return [{**encounter_record, "photos": photos, "seconds": seconds}]
