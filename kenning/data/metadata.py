"""What a photo shows besides its identity: its viewpoint and its encounter.

- `viewpoint`: which side of the instance it shows (left / right / front / fluke: free text). A left
  flank shares no stripes, spots or scars with a right one, so photos are matched only against
  compatible viewpoints: equal ones, or pairs declared compatible (`index.compatible_viewpoints`);
  an unknown viewpoint ("") is compatible with all, so data without viewpoints matches as before.
- `encounter`: photos of one animal at one place and time (Wildbook's encounter, nyala's
  sighting), answered together (decision/encounters.py).

Given as `labels.csv` columns; where they are not, read from file names of the form
`<n>_leftphoto.jpg` / `<n>_rightphoto.jpg` (the shared Nyala set): the flank, and the encounter
`<folder>/<n>`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from kenning.errors import KenningError

VIEWPOINT, ENCOUNTER = "viewpoint", "encounter"
UNKNOWN = ""  # a viewpoint or encounter nobody recorded
_FLANK = re.compile(r"^(\d+)_(left|right)photo$", re.IGNORECASE)
MAX_LENGTH = 200


def from_name(image_id: str) -> tuple[str, str]:
    """(viewpoint, encounter) a nyala-style file name states; ("", "") for any other name."""
    path = PurePosixPath(str(image_id).replace("\\", "/"))
    match = _FLANK.match(path.stem)
    if match is None:
        return UNKNOWN, UNKNOWN
    return match.group(2).lower(), str(path.parent / match.group(1))


def with_metadata(table: pd.DataFrame) -> pd.DataFrame:
    """`table` (with image_id) with viewpoint and encounter columns: values given are kept (stripped,
    viewpoints lower-cased), empty ones read from the file name."""
    derived = [from_name(i) for i in table["image_id"]] if len(table) else []
    out = {}
    for position, column in enumerate((VIEWPOINT, ENCOUNTER)):
        given = table[column].fillna("").astype(str).str.strip() if column in table else pd.Series("", table.index)
        if column == VIEWPOINT:
            given = given.str.lower()
        names = pd.Series([d[position] for d in derived], index=table.index, dtype=object)
        out[column] = given.where(given != "", names).astype(str)
        check_metadata(out[column].unique(), column)
    return table.assign(**out)


def metadata_lists(rows: pd.DataFrame) -> dict[str, list[str]]:
    """The rows' viewpoints and encounters (given, or read from their names), as an index stores them."""
    rows = with_metadata(rows)
    return {VIEWPOINT: rows[VIEWPOINT].tolist(), ENCOUNTER: rows[ENCOUNTER].tolist()}


def check_metadata(values: Sequence[str], what: str) -> None:
    for value in values:
        if len(value) > MAX_LENGTH or any(not ch.isprintable() for ch in value):
            raise KenningError(f"{what} {value[:40]!r} is not printable text of at most {MAX_LENGTH} characters")


def parse_compatible(text: str) -> frozenset[tuple[str, str]]:
    """`index.compatible_viewpoints` ("front=left, front=right"): pairs matched besides equal ones."""
    pairs = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        a, sep, b = item.partition("=")
        if not sep or not a.strip() or not b.strip():
            raise KenningError(f"index.compatible_viewpoints: {item!r} is not 'view=view'")
        a, b = a.strip().lower(), b.strip().lower()
        pairs |= {(a, b), (b, a)}
    return frozenset(pairs)


def compatible(query: str, gallery: np.ndarray, pairs: frozenset[tuple[str, str]] = frozenset()) -> np.ndarray:
    """Which gallery viewpoints a query of viewpoint `query` may match."""
    gallery = np.asarray(gallery, dtype=object)
    if query == UNKNOWN:
        return np.ones(len(gallery), bool)
    ok = (gallery == UNKNOWN) | (gallery == query)
    if pairs:
        ok |= np.array([(query, g) in pairs for g in gallery], bool)
    return ok
