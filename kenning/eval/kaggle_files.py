"""Score Kaggle submission files offline against a solution file, the way Kaggle did.

Humpback Whale Identification: submission `Image,Id` (up to five space-separated ids), solution
`Image,Id` (one id; new_whale is an ordinary label), MAP@5. Google Landmark Recognition:
submission `id,landmarks` (`label score`, empty for no prediction), solution `id,landmark_id`
(empty for a non-landmark image), GAP. A malformed file is refused with its line number.

Read with the csv module rather than pandas: pandas does not say which line of a file is wrong.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kenning.errors import KenningError
from kenning.eval.submission import FORMATS
from kenning.metrics.retrieval import global_average_precision, map_at_k
from kenning.paths import require_file

COLUMNS = {  # (submission, solution) header of each format
    "whale": (("Image", "Id"), ("Image", "Id")),
    "landmark": (("id", "landmarks"), ("id", "landmark_id")),
}


@dataclass
class Row:
    line: int
    key: str
    value: str


def read_rows(path: str | Path, columns: tuple[str, str]) -> list[Row]:
    """(line, key, value) of each data row; refuses a missing header column, a short or long row,
    an empty or repeated key."""
    path = require_file(path)
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for line, header, fields in _records(path):
        if header is not None:
            missing = [c for c in columns if c not in header]
            if missing:
                raise KenningError(
                    f"{path}:{line}: header {','.join(header)!r} lacks column {missing[0]!r} "
                    f"(expected {','.join(columns)})"
                )
            positions = [header.index(c) for c in columns]
            width = len(header)
            continue
        if not any(f.strip() for f in fields):
            continue  # blank line
        if len(fields) != width:
            raise KenningError(f"{path}:{line}: {len(fields)} fields, the header has {width}")
        key, value = (fields[p].strip() for p in positions)
        if not key:
            raise KenningError(f"{path}:{line}: empty {columns[0]}")
        if key in seen:
            raise KenningError(f"{path}:{line}: {columns[0]} {key!r} again (first on line {seen[key]})")
        seen[key] = line
        rows.append(Row(line, key, value))
    if not rows:
        raise KenningError(f"{path}: no rows under the header")
    return rows


def _records(path: Path) -> Iterator[tuple[int, list[str] | None, list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise KenningError(f"{path}: empty file (expected a header line)")
            yield reader.line_num, [h.strip() for h in header], []
            for fields in reader:
                yield reader.line_num, None, fields
    except UnicodeDecodeError:
        raise KenningError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise KenningError(f"{path}: not a readable CSV file ({exc})") from None


def read_whale_submission(path: str | Path) -> dict[str, tuple[int, list[str]]]:
    """Image -> (line, up to five predicted ids)."""
    out = {}
    for row in read_rows(path, COLUMNS["whale"][0]):
        ids = row.value.split()
        if len(ids) > 5:
            raise KenningError(f"{path}:{row.line}: {len(ids)} ids for {row.key!r}; at most 5 are scored")
        out[row.key] = (row.line, ids)
    return out


def read_landmark_submission(path: str | Path) -> dict[str, tuple[int, tuple[str, float] | None]]:
    """id -> (line, (label, score) or None for no prediction)."""
    out = {}
    for row in read_rows(path, COLUMNS["landmark"][0]):
        parts = row.value.split()
        if not parts:
            out[row.key] = (row.line, None)
            continue
        if len(parts) != 2:
            raise KenningError(
                f"{path}:{row.line}: landmarks {row.value!r} for {row.key!r}; expected 'label score' or nothing"
            )
        try:
            score = float(parts[1])
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise KenningError(f"{path}:{row.line}: score {parts[1]!r} for {row.key!r} is not a finite number")
        out[row.key] = (row.line, (parts[0], score))
    return out


def read_solution(path: str | Path, fmt: str) -> dict[str, tuple[int, str | None]]:
    """Image id -> (line, its one true label, or None for a non-landmark)."""
    out = {}
    for row in read_rows(path, COLUMNS[fmt][1]):
        parts = row.value.split()
        if len(parts) > 1:
            raise KenningError(f"{path}:{row.line}: {len(parts)} labels for {row.key!r}; the solution holds one")
        if not parts and fmt == "whale":
            raise KenningError(f"{path}:{row.line}: empty Id for {row.key!r} (an unknown whale is new_whale)")
        out[row.key] = (row.line, parts[0] if parts else None)
    return out


def score_file_options(submission: Path | None, solution: Path | None, fmt: str | None) -> dict[str, float | int | str]:
    """`eval --submission --solution --format`: all three are needed."""
    if submission is None or solution is None or fmt is None:
        raise KenningError("scoring a file needs --submission, --solution and --format whale|landmark")
    return score_files(submission, solution, fmt)


def score_files(submission: str | Path, solution: str | Path, fmt: str) -> dict[str, float | int | str]:
    """MAP@5 (whale) or GAP (landmark) of a submission; every solution image must have a row, and
    no row may name an image the solution lacks."""
    if fmt not in FORMATS:
        raise KenningError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    truth = read_solution(solution, fmt)
    answers = read_whale_submission(submission) if fmt == "whale" else read_landmark_submission(submission)
    for key, (line, _) in answers.items():
        if key not in truth:
            raise KenningError(f"{submission}:{line}: {key!r} is not in the solution {solution}")
    missing = [(line, key) for key, (line, _) in truth.items() if key not in answers]
    if missing:
        line, key = missing[0]
        raise KenningError(
            f"{submission}: no row for {len(missing)} image(s) of the solution, first {key!r} ({solution}:{line})"
        )
    keys = list(truth)
    if fmt == "whale":
        score = map_at_k([truth[k][1] for k in keys], [answers[k][1] for k in keys])
        return {"format": fmt, "queries": len(keys), "map@5": score}
    made = [answers[k][1] for k in keys]
    actual = [truth[k][1] for k in keys]
    gap = global_average_precision(
        actual,
        [m[0] if m else None for m in made],
        [m[1] if m else 0.0 for m in made],
        keys,
    )
    return {
        "format": fmt,
        "queries": len(keys),
        "landmark_queries": sum(a is not None for a in actual),
        "predictions": sum(m is not None for m in made),
        "gap": gap,
    }
