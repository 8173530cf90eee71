"""`query --batch --group`: a batch's photos that match each other answered together.

The links are local matches between the batch's photos (decision/grouping.py decides what they
join): the batch is enrolled into an in-memory copy of the index, each photo its own identity, and
every photo queries that copy with itself left out; its best match among the other photos, and that
score, is its link. That second pass over the batch roughly doubles the cost of answering it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kenning.data.metadata import ENCOUNTER, VIEWPOINT
from kenning.decision.grouping import Grouping, grouped, link_groups, sure_labels
from kenning.decision.threshold import new_rate_threshold
from kenning.decision.voting import Prediction
from kenning.errors import KenningError
from kenning.reader import Probes
from kenning.recognizer import GLOBAL_CANDIDATES, Recognizer


def stored_grouping(recognizer: Recognizer) -> Grouping:
    """The index's calibrated grouping; refused in one line where it has none or cannot use it."""
    if not recognizer.use_local:
        raise KenningError("--group links photos by local matching: this index has none (or --no-local was given)")
    grouping = Grouping.from_dict(recognizer.index.manifest.grouping)
    if grouping is None:
        raise KenningError(
            "this index has no calibrated batch grouping: rebuild it with --set index.grouping=true "
            "(it needs local matching and held-out identities)"
        )
    return grouping


def batch_links(recognizer: Recognizer, probes: Probes, views: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each readable photo's best local match among the batch's other photos (its position; itself
    where none matched) and that match's score (0 where none)."""
    n = len(probes.vectors)
    names = [f"batch-photo-{i}" for i in range(n)]
    first = recognizer.index.manifest.next_id  # with_enrolled gives the batch the next ids, in order
    metadata = {VIEWPOINT: list(views), ENCOUNTER: [""] * n}
    batch = recognizer.with_index(recognizer.index.with_enrolled(probes.vectors, names, names, probes.local, metadata))
    ids = np.arange(first, first + n, dtype=np.int64)
    found = batch.match(probes.vectors, probes.local, width=GLOBAL_CANDIDATES, exclude=ids[:, None], views=views)
    partner, score = np.arange(n), np.zeros(n)
    for i, local in enumerate(found.local or []):
        for image, value in zip(local.image_ids, local.image_scores, strict=True):
            if first <= int(image) < first + n:  # best first: the first photo of the batch among them
                partner[i], score[i] = int(image) - first, float(value)
                break
    return partner, score


def answer_grouped(
    recognizer: Recognizer, paths: Sequence[str], views: Sequence[str], new_rate: float | None = None, top: int = 5
) -> tuple[list[Prediction | str], np.ndarray]:
    """Each photo's answer as its group's (or the line why it could not be read), and each path's
    group number (-1: unreadable). Held to the grouping's own unknown threshold, or with `new_rate`
    to the batch's, under which that share of its photos is new."""
    grouping = stored_grouping(recognizer)
    probes = recognizer.read(paths)
    views = [v for v, ok in zip(views, probes.ok, strict=True) if ok]
    groups = np.full(len(paths), -1)
    if not len(views):
        return list(probes.errors), groups
    ranked = recognizer.rank(recognizer.match(probes.vectors, probes.local, views=views))
    partner, score = batch_links(recognizer, probes, views)
    groups[probes.ok] = link_groups(partner, score, grouping.link, sure_labels(ranked, recognizer.threshold))
    answers = grouped(ranked, views, groups[probes.ok])
    threshold = grouping.threshold if new_rate is None else new_rate_threshold(answers, new_rate)
    predictions, errors = iter(recognizer.answer(answers, threshold, top)), iter(probes.errors)
    return [next(predictions) if ok else next(errors) for ok in probes.ok], groups
