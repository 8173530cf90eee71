"""Readers for the layouts users bring, all returning one table: image_id, path, label, split, sha256,
viewpoint, encounter (metadata.py: optional `labels.csv` columns, else read from file names).

`label` is UNLABELLED ("") for images of no known identity: Humpback's `new_whale`, a
non-landmark photo, or an empty label in the generic layout. Paths are absolute, so that what is
stored from a table (a model's held-out set, an index's label table) works from any folder.
Labels follow `kenning.labels`; an image listed twice, by path or by content, is kept once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from kenning.data.duplicates import DIGEST, drop_duplicates
from kenning.data.metadata import ENCOUNTER, VIEWPOINT, with_metadata
from kenning.errors import KenningError, warn
from kenning.labels import label_problem, normalise_label
from kenning.paths import path_kind, require_file

UNLABELLED = ""
COLUMNS = ["image_id", "path", "label", "split", DIGEST, VIEWPOINT, ENCOUNTER]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
WHALE_UNKNOWN = "new_whale"
CATALOGUE = "catalogue.csv"  # what `kenning export` writes (export.py)
LANDMARK_ID = re.compile(r"[0-9A-Za-z_-]{3,}")
EVAL_SPLITS = ("test", "val")


def read_dataset(root: str | Path) -> pd.DataFrame:
    """Detect the layout of `root` and read it.

    labels.csv (image,label[,split]) -> generic; catalogue.csv -> a `kenning export`; train.csv with
    id,landmark_id -> Google Landmark; train.csv with Image,Id -> Humpback Whale; otherwise one
    sub-folder per class.
    """
    root = Path(root)
    kind = path_kind(root)
    if kind != "a folder":
        raise KenningError(f"data folder not found: {root}" if kind is None else f"data folder {root} is {kind}")
    root = Path(os.path.abspath(root))
    if path_kind(root / "labels.csv") is not None:
        return read_generic(root)
    if path_kind(root / CATALOGUE) is not None:
        return read_catalogue(root)
    train_csv = root / "train.csv"
    if path_kind(train_csv) is not None:
        columns = set(_read_csv(train_csv, nrows=0).columns)
        if {"id", "landmark_id"} <= columns:
            return read_landmark(root)
        if {"Image", "Id"} <= columns:
            return read_whale(root)
        raise KenningError(
            f"{train_csv} has columns {sorted(columns)}; expected 'id,landmark_id' (Google Landmark) "
            "or 'Image,Id' (Humpback Whale)"
        )
    return read_folders(root)


def read_generic(root: Path) -> pd.DataFrame:
    csv = root / "labels.csv"
    df = _read_csv(csv)
    _require(df, csv, ["image", "label"])
    split = df["split"].fillna("train").astype(str) if "split" in df else "train"
    metadata = {c: df[c].tolist() for c in (VIEWPOINT, ENCOUNTER) if c in df}
    images = df["image"].astype(str)
    return _table(images, [root / i for i in images], df["label"], split, csv, metadata)


def read_catalogue(root: Path) -> pd.DataFrame:
    """A catalogue `kenning export` wrote: its photos under their exact labels, image ids and
    metadata (a folder name cannot hold every label); rows whose photo was missing are skipped, said."""
    csv = root / CATALOGUE
    df = _read_csv(csv)
    _require(df, csv, ["image", "label", "image_id"])
    gone = df["image"] == ""
    if gone.any():
        warn(f"{csv}: {int(gone.sum())} image(s) had no photo when exported and are skipped")
        df = df[~gone]
    metadata = {c: df[c].tolist() for c in (VIEWPOINT, ENCOUNTER) if c in df}
    return _table(df["image_id"], [root / i for i in df["image"]], df["label"], "train", csv, metadata)


def read_landmark(root: Path) -> pd.DataFrame:
    """Kaggle Google Landmark Recognition: train.csv with id,landmark_id; images at train/a/b/c/abc...jpg."""
    csv = root / "train.csv"
    df = _read_csv(csv)
    _require(df, csv, ["id", "landmark_id"])
    ids = df["id"].astype(str)
    for row, i in enumerate(ids, start=1):  # the first three characters name the folders the image is in
        if not LANDMARK_ID.fullmatch(i):
            raise KenningError(
                f"{csv}: row {row}: id {i!r} is not a Google Landmark image id (3 or more letters, digits, _ or -)"
            )
    paths = [root / "train" / i[0] / i[1] / i[2] / f"{i}.jpg" for i in ids]
    return _table(ids, paths, df["landmark_id"], "train", csv)


def read_whale(root: Path) -> pd.DataFrame:
    """Kaggle Humpback Whale Identification: train.csv with Image,Id; `new_whale` is never a class."""
    csv = root / "train.csv"
    df = _read_csv(csv)
    _require(df, csv, ["Image", "Id"])
    labels = df["Id"].astype(str).where(df["Id"].astype(str) != WHALE_UNKNOWN, UNLABELLED)
    images = df["Image"].astype(str)
    return _table(images, [root / "train" / i for i in images], labels, "train", csv)


def read_folders(root: Path) -> pd.DataFrame:
    rows = [
        (str(p.relative_to(root)), p, p.parent.name)
        for p in sorted(root.glob("*/*"))
        if p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not rows:
        raise KenningError(
            f"no dataset found in {root}: expected labels.csv, train.csv or one sub-folder of images per class"
        )
    ids, paths, labels = zip(*rows, strict=True)
    return _table(pd.Series(ids), list(paths), pd.Series(labels), "train", root)


QUERY_COLUMNS = ("path", "image", "Image", "id")


def read_query_list(source: str | Path) -> pd.DataFrame:
    """Images to answer in batch: every image under a folder, or the rows of a CSV naming them in a
    `path`, `image` or `Image` column (relative to the CSV) or an `id` column (`<id>.jpg` beside it).
    Returns `name` (the submission's key: file name, or the id), `path`, and the list's `viewpoint`
    and `encounter` columns where it has them."""
    source = Path(source)
    if source.is_dir():
        # Every entry named like an image gets a row, whatever it is (a dangling link, a FIFO, a device:
        # answered with an error naming it, never dropped); entries named otherwise are named in a warning.
        entries = sorted(p for p in source.rglob("*") if not p.is_dir())
        paths = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        others = [p.relative_to(source).as_posix() for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES]
        if others:
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            warn(f"{len(others)} file(s) under {source} are not images by their names and get no row: {shown}")
        if not paths:
            raise KenningError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {source}")
        names = pd.Series([p.name for p in paths])
        if names.duplicated().any():  # camA/IMG_1.jpg and camB/IMG_1.jpg: one key each in the submission
            names = pd.Series([p.relative_to(source).as_posix() for p in paths])
        return pd.DataFrame({"name": names.tolist(), "path": [str(p) for p in paths]})
    df = _read_csv(require_file(source, "query list"))
    column = next((c for c in QUERY_COLUMNS if c in df.columns), None)
    if column is None:
        raise KenningError(f"{source} has columns {list(df.columns)}; expected one of {', '.join(QUERY_COLUMNS)}")
    names = df[column].astype(str)
    if names.duplicated().any():
        again = names[names.duplicated()].iloc[0]
        raise KenningError(f"{source}: {column} {again!r} is listed twice; a submission holds one row per image")
    files = names + ".jpg" if column == "id" else names
    metadata = {c: df[c].tolist() for c in (VIEWPOINT, ENCOUNTER) if c in df}
    return pd.DataFrame({"name": names.tolist(), "path": [str(source.parent / f) for f in files], **metadata})


def select_split(df: pd.DataFrame, split: str | None) -> pd.DataFrame:
    """Rows of one split; None or 'all' keeps everything; 'eval' means the set's test or val split."""
    if split in (None, "all"):
        return df
    if split == "eval":
        present = [s for s in EVAL_SPLITS if (df["split"] == s).any()]
        if not present:
            raise KenningError(f"no evaluation split: expected one of {EVAL_SPLITS}")
        split = present[0]
    out = df[df["split"] == split]
    if out.empty:
        raise KenningError(f"split '{split}' is empty; splits present: {sorted(df['split'].unique())}")
    return out.reset_index(drop=True)


def _read_csv(csv: Path, nrows: int | None = None) -> pd.DataFrame:
    require_file(csv, "CSV file")
    try:
        return pd.read_csv(csv, nrows=nrows, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise KenningError(f"cannot read {csv}: {str(exc).splitlines()[0]}") from None


def _require(df: pd.DataFrame, csv: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KenningError(
            f"{csv} lacks column(s) {', '.join(missing)}: expected {', '.join(columns)}, "
            f"found {', '.join(map(str, df.columns)) or 'none'}"
        )


def _table(image_ids, paths, labels, split, source: Path, metadata: dict | None = None) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "image_id": list(image_ids),
            "path": [os.path.normpath(p) for p in paths],
            "label": pd.Series(list(labels), dtype=str).fillna(UNLABELLED).str.strip().map(normalise_label).to_numpy(),
            "split": split,
            **(metadata or {}),
        }
    )
    _check_labels(df["label"], source)
    df = with_metadata(df)
    return drop_duplicates(df, str(source))[COLUMNS]


def _check_labels(labels: pd.Series, source: Path) -> None:
    for label in labels.unique():
        problem = None if label == UNLABELLED else label_problem(label)
        if problem is not None:
            row = int((labels == label).to_numpy().argmax()) + 1
            raise KenningError(f"{source}: row {row}: label {label!r} {problem}")
