"""The same image listed twice, by path or under two names with identical bytes, is kept once.

A duplicate in a gallery is a perfect match for its twin: leave-one-out evaluation would score
every duplicated query as recognised (MAP@5 1.000 on images nothing recognised), and a copy in
both training and held-out data leaks. So every dataset is reduced to one row per file content
when it is read, and the content digest travels with the row (index tables keep it, so that
evaluation and enrolment recognise the same bytes under any name).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import pandas as pd
from tqdm import tqdm

from kenning.errors import warn
from kenning.paths import path_kind

DIGEST = "sha256"
PROGRESS_FROM = 2000  # files: below this, hashing takes well under a second and shows no bar


def file_digest(path: str) -> str:
    """SHA-256 of a regular file's bytes; "" for an empty file or anything that is not a regular file
    (nothing to compare: it fails later, by name, where it is decoded)."""
    try:
        if path_kind(path) != "a regular file" or os.path.getsize(path) == 0:
            return ""
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except Exception:  # unreadable here is reported where the image is decoded, with its reason
        return ""


def file_digests(paths: Sequence[str], progress: bool | None = None) -> list[str]:
    show = len(paths) >= PROGRESS_FROM if progress is None else progress
    return [file_digest(p) for p in tqdm(paths, desc="checking for duplicate files", unit="file", disable=not show)]


def drop_duplicates(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """One row per file: the first of rows with the same path or the same bytes, with one warning
    that counts them and shows an example. Adds the `sha256` column (computed if missing)."""
    if DIGEST not in table:
        table = table.assign(**{DIGEST: file_digests(table["path"].tolist())})
    by_path = table["path"].duplicated(keep="first")
    rest = table[~by_path]
    digests = rest[DIGEST]
    by_bytes = digests.duplicated(keep="first") & (digests != "")
    if not by_path.any() and not by_bytes.any():
        return table
    parts = []
    if by_path.any():
        example = table.loc[by_path, "image_id"].iloc[0]
        parts.append(f"{int(by_path.sum())} listed again under the same path (e.g. {example!r})")
    if by_bytes.any():
        twin = rest[by_bytes].iloc[0]
        first = rest.loc[(digests == twin[DIGEST]) & ~by_bytes, "image_id"].iloc[0]
        parts.append(f"{int(by_bytes.sum())} with the same bytes as another (e.g. {twin['image_id']!r} = {first!r})")
    conflicts = _label_conflicts(table, by_path, rest, by_bytes)
    warn(
        f"{source}: kept one of each duplicated image: {'; '.join(parts)}{conflicts}. A copy would match "
        "its twin as if recognised"
    )
    return rest[~by_bytes].reset_index(drop=True)


def _label_conflicts(table: pd.DataFrame, by_path: pd.Series, rest: pd.DataFrame, by_bytes: pd.Series) -> str:
    labels_per_path = table.groupby("path")["label"].nunique()
    labels_per_digest = rest[rest[DIGEST] != ""].groupby(DIGEST)["label"].nunique()
    n = int((labels_per_path > 1).sum() + (labels_per_digest > 1).sum())
    return f"; {n} of them under different labels (the first label kept)" if n else ""
