"""Kaggle submission files from Kenning's answers.

Humpback Whale Identification: `Image,Id`, five space-separated labels per image (the unknown
label, e.g. new_whale, where the threshold places it). Google Landmark Recognition: `id,landmarks`
with `label confidence` for the top answer, empty when the top answer is unknown (a non-landmark).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from kenning.atomic import atomic_save
from kenning.decision.voting import Prediction
from kenning.errors import KenningError
from kenning.paths import path_kind, require_output_file

if TYPE_CHECKING:
    from kenning.recognizer import Recognizer

FORMATS = ("whale", "landmark")


def submission_table(
    fmt: str, names: Sequence[str], answers: Sequence[Prediction | str], unknown_label: str
) -> pd.DataFrame:
    """One row per query; an image that could not be read gets the unknown answer (whale) or none."""
    if fmt == "whale":
        ids = [" ".join(a.labels[:5]) if isinstance(a, Prediction) else unknown_label for a in answers]
        return pd.DataFrame({"Image": list(names), "Id": ids})
    if fmt == "landmark":
        cells = []
        for a in answers:
            top_known = isinstance(a, Prediction) and a.labels and a.labels[0] != unknown_label
            cells.append(f"{a.labels[0]} {a.confidences[0]:.6f}" if top_known else "")
        return pd.DataFrame({"id": submission_keys(fmt, names), "landmarks": cells})
    raise ValueError(f"unknown submission format {fmt!r}; choose one of {', '.join(FORMATS)}")


def submission_keys(fmt: str, names: Sequence[str]) -> list[str]:
    """The key each query gets in the file (landmark ids drop the extension); refused when two
    queries would share one: Kaggle's scorer, and Kenning's, take each key once."""
    keys = [os.path.splitext(n)[0] if fmt == "landmark" else n for n in names]
    seen: dict[str, str] = {}
    for key, name in zip(keys, names, strict=True):
        if key in seen:
            raise KenningError(
                f"{seen[key]!r} and {name!r} would both be {key!r} in a {fmt} submission: rename one of them"
            )
        seen[key] = name
    return keys


def write_submission(
    out: str | Path, fmt: str, names: Sequence[str], answers: Sequence[Prediction | str], unknown_label: str
) -> list[str]:
    """Write the CSV atomically; returns the error lines of queries that could not be read."""
    table = submission_table(fmt, names, answers, unknown_label)
    atomic_save(out, lambda p: table.to_csv(p, index=False))
    return [a for a in answers if isinstance(a, str)]


def check_submission_out(out: Path, batch: Path, replace: bool, fmt: str) -> None:
    """Before anything loads: a known format, and a submission never overwrites its own query list,
    nor any existing file unless asked to."""
    if fmt not in FORMATS:
        raise KenningError(f"--format must be whale or landmark, not {fmt!r}")
    require_output_file(out, "submission")
    if path_kind(out) is None:
        return
    if path_kind(batch) == "a regular file" and os.path.samefile(out, batch):
        raise KenningError(f"--out {out} is the query list itself: write the submission elsewhere")
    if not replace:
        raise KenningError(
            f"{out} exists and Kenning cannot tell it is its own: choose another --out, or pass --replace"
        )


def answer_batch(
    recognizer: Recognizer, batch: Path, fmt: str, out: Path, new_rate: float | None = None, group: bool = False
) -> tuple[int, list[str], int | None]:
    """`query --batch`: answer every image of a folder or query list and write the submission;
    returns its rows and the error lines of images that could not be read. A list with `viewpoint`
    / `encounter` columns (or nyala-style names) is matched by viewpoint, and every photo of an
    encounter gets the encounter's answer. `new_rate`: the batch's own threshold answers that share
    of its photos unknown (instead of the index's). `group`: photos that match each other are answered
    together (batch_grouping.py; a list that records encounters is refused). Labels a Kaggle file
    cannot hold, and names that collide in it, are refused before any image is read. Returns the
    rows, the error lines and, with `group`, how many groups the readable photos formed."""
    from kenning.answers import answer_encounters
    from kenning.batch_grouping import answer_grouped
    from kenning.data.metadata import ENCOUNTER, VIEWPOINT, with_metadata
    from kenning.data.readers import read_query_list
    from kenning.labels import check_kaggle_labels

    check_kaggle_labels([*recognizer.index.label_counts().index, recognizer.unknown_label], fmt)
    listing = with_metadata(read_query_list(batch).assign(image_id=lambda t: t["name"]))
    submission_keys(fmt, listing["name"].tolist())  # x.jpg and x.png: refused before any image is read
    paths, views, encounters = (listing[c].tolist() for c in ("path", VIEWPOINT, ENCOUNTER))
    if group:
        if any(encounters):
            raise KenningError(
                "--group joins photos nobody grouped, and this list records encounters: leave out --group"
            )
        answers, groups = answer_grouped(recognizer, paths, views, new_rate)
        count = len(set(groups[groups >= 0].tolist()))
    else:
        each, together = answer_encounters(recognizer, paths, views, encounters, new_rate)
        answers = [
            together.get(e, a) if isinstance(a, Prediction) else a for a, e in zip(each, encounters, strict=True)
        ]
        count = None
    return len(listing), write_submission(out, fmt, listing["name"].tolist(), answers, recognizer.unknown_label), count
