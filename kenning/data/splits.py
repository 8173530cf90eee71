"""Protocol B of ../shared/data/README.md as a split of a labelled table: enrolled images and queries.

The same split calibrates the unknown threshold on held-out training identities at build time and
scores a model on the evaluation split (`kenning eval --protocol catalogue`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from kenning.data.readers import UNLABELLED

NEW_RESIDUES = (0, 3, 6)  # identity i (sorted by label as strings) is new when i % 10 is one of these
_SIGHTING = re.compile(r"^(\d+)_")  # nyala: <n>_leftphoto.jpg / <n>_rightphoto.jpg are one sighting


def sighting_key(image_id: str) -> tuple[int, str]:
    """Order of an identity's sightings: `<n>_...` files by the number n (both flanks of a sighting
    share it), any other file by its own name."""
    name = Path(image_id).name
    match = _SIGHTING.match(name)
    return (int(match.group(1)), "") if match else (-1, name)


def catalogue_split(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(enrolled, queries). Identities sorted by label as strings; identity i is new when i % 10 is
    0, 3 or 6; each known identity enrols its first sighting and all its other images query it.
    Every image of a new identity, and every unlabelled image, is a query whose answer is unknown."""
    labels = sorted(set(table["label"]) - {UNLABELLED})
    new = {lab for i, lab in enumerate(labels) if i % 10 in NEW_RESIDUES}
    keys = table["image_id"].map(sighting_key)
    known = table[(table["label"] != UNLABELLED) & ~table["label"].isin(new)]
    first = keys[known.index].groupby(known["label"]).transform("min")
    enrolled_index = known.index[keys[known.index] == first]
    return table.loc[enrolled_index], table.drop(index=enrolled_index)
