"""Answers as programs read them: one record per photo, the same for `query --json` and the service.

Each answer: its label, whether it is the unknown answer (placed by the threshold, so it has no
confidence), its confidence and, with local matching, its score parts; then the best match's score,
what that score is (the rule's: a similarity or a fused probability) and the threshold it was held
to. The Kaggle files of `query --batch` are written from the same predictions (eval/submission.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kenning.decision.rules import Rule
from kenning.decision.voting import Prediction


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
