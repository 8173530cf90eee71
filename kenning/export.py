"""A catalogue a person can browse and another machine can rebuild: one folder per identity with
its photos (copied from where they were indexed or enrolled), `catalogue.csv` (image id, label,
source path, enrol time, viewpoint, encounter) and `index.html` with thumbnails.

`build-index --data EXPORT` reads it back (data/readers.py reads `catalogue.csv`: exact labels,
image ids and metadata, whatever a folder name can hold). A killed export resumes: photos already
copied (same size) are kept. Re-exporting into an export folder replaces only the files an export
listed there; any other file makes the folder foreign, and it is refused.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from tqdm import tqdm

from kenning.atomic import ANY_TEMPORARY, atomic_path, atomic_write_text, sweep_temporaries
from kenning.data.readers import CATALOGUE
from kenning.errors import KenningError, first_line
from kenning.index.gallery import GalleryIndex
from kenning.locks import folder_lock
from kenning.paths import require_output_dir

MARKER = ".kenning-export"  # written first: a folder without it is a user's, however it looks
PAGE = "index.html"
LOCK = ".kenning-export.lock"
PLAN = ".catalogue-partial.csv"  # the catalogue being written: what a killed export had started to copy
COLUMNS = ["image", "label", "image_id", "source_path", "enrolled_at", "viewpoint", "encounter"]
UNSAFE = re.compile(r'[/\\<>:"|?*]')  # not in a folder or file name on Linux, macOS or Windows
MAX_NAME_BYTES = 200


@dataclass
class Exported:
    out: Path
    identities: int
    photos: int  # photos in the export (copied now or by an earlier run)
    missing: list[str] = field(default_factory=list)  # image ids with no photo: none where it was indexed from


def export_catalogue(index_dir: str | Path, out: str | Path, progress: bool = True) -> Exported:
    """Write the live catalogue of an index into `out` (new, empty, or an earlier export)."""
    out = require_output_dir(out, "export folder", is_export_dir)
    table = GalleryIndex.load(index_dir).table.sort_values(["label", "image_id"], kind="stable")
    plan = _plan(table)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, "a Kenning catalogue export: `kenning export` may rewrite this folder\n")
    with folder_lock(out / LOCK, 0, f"another export is writing into {out}: let it finish first"):
        earlier = _listed(out)
        _write_csv(out / PLAN, plan)
        for stale in sorted(earlier - set(plan["image"])):  # listed by an earlier export of this folder: ours
            if (out / stale).is_file():
                (out / stale).unlink()
                _remove_if_empty(out / stale)
        for folder in {out, *(out / Path(i).parent for i in plan["image"])}:  # a killed export's half copies
            sweep_temporaries(folder, ANY_TEMPORARY)
        missing = _copy(plan, out, progress)
        done = plan.assign(image=plan["image"].where(~plan["image_id"].isin(missing), ""))
        _write_csv(out / CATALOGUE, done)
        atomic_write_text(out / PAGE, _page(done, Path(index_dir).name))
        (out / PLAN).unlink()
    return Exported(out, int(done["label"].nunique()), int((done["image"] != "").sum()), missing)


def _copy(plan: pd.DataFrame, out: Path, progress: bool) -> list[str]:
    """Copy each photo not already there (same size); returns the image ids left without one."""
    missing = []
    for row in tqdm(plan.itertuples(), total=len(plan), desc="export", unit="photo", disable=not progress):
        target = out / row.image
        source = Path(row.source_path)
        if not source.is_file():
            if not target.is_file():  # one an earlier export copied stays: it is that photo
                missing.append(row.image_id)
            continue
        if not (target.is_file() and target.stat().st_size == source.stat().st_size):
            with atomic_path(target) as tmp:  # a kill never leaves half a photo under its name
                shutil.copyfile(source, tmp)
    return missing


def is_export_dir(directory: Path) -> bool:
    """An export made before (or a killed one's start): its marker, and no file that an export did not list."""
    if not (directory / MARKER).is_file():
        return False
    listed = _listed(directory)
    for path in directory.rglob("*"):
        name = path.relative_to(directory).as_posix()
        top = "/" not in name
        if path.is_dir() and not path.is_symlink():
            continue
        if (top and name in (MARKER, CATALOGUE, PAGE, PLAN, LOCK)) or name in listed or ANY_TEMPORARY.match(path.name):
            continue
        return False
    return True


def safe_name(name: str) -> str:
    """`name` as a folder or file name every system accepts; changed names get a hash of the original,
    so two labels never share a folder (catalogue.csv keeps the exact label)."""
    cleaned = UNSAFE.sub("_", name).lstrip(".") or "_"
    if cleaned == name and len(name.encode()) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    stem, suffix = os.path.splitext(cleaned)
    stem = stem.encode()[: MAX_NAME_BYTES - 20].decode(errors="ignore")
    return f"{stem}-{digest}{suffix if len(suffix) <= 10 else ''}"


def _plan(table: pd.DataFrame) -> pd.DataFrame:
    """Where each photo goes: `<label folder>/<image id's file name>`, made unique within its folder."""
    images = []
    for folder, rows in table.groupby(table["label"].map(safe_name), sort=False):
        taken: set[str] = set()
        for row, image_id, path in zip(rows.index, rows["image_id"], rows["path"], strict=True):
            name = safe_name(Path(str(image_id)).name)
            if not os.path.splitext(name)[1]:
                name += os.path.splitext(str(path))[1]
            stem, suffix = os.path.splitext(name)
            n = 1
            while name.lower() in taken:  # case-insensitive file systems too
                n += 1
                name = f"{stem}-{n}{suffix}"
            taken.add(name.lower())
            images.append((row, f"{folder}/{name}"))
    where = pd.Series(dict(images))
    rows = table.rename(columns={"path": "source_path"}).assign(image=where)
    return rows[COLUMNS].reset_index(drop=True)


def _listed(directory: Path) -> set[str]:
    """Photo paths an earlier (or killed) export of `directory` wrote."""
    listed: set[str] = set()
    for name in (CATALOGUE, PLAN):
        if (directory / name).is_file():
            try:
                rows = pd.read_csv(directory / name, dtype=str, keep_default_na=False, usecols=["image"])
            except (ValueError, UnicodeDecodeError) as exc:  # pandas' parser errors are ValueErrors
                raise KenningError(f"{directory / name} is not an export's catalogue: {first_line(exc)}") from None
            listed.update(i for i in rows["image"] if i and ".." not in Path(i).parts and not Path(i).is_absolute())
    return listed


def _remove_if_empty(path: Path) -> None:
    folder = path.parent
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table[COLUMNS].to_csv(tmp, index=False)


def _page(table: pd.DataFrame, title: str) -> str:
    """A static page: each identity with its photos (no script; the browser scales the photos)."""
    sections = []
    for label, rows in table.groupby("label", sort=True):
        shown = [
            f'<a href="{quote(i)}"><img src="{quote(i)}" loading="lazy" alt="{html.escape(n)}" '
            f'title="{html.escape(n)}"></a>'
            for i, n in zip(rows["image"], rows["image_id"], strict=True)
            if i
        ]
        gone = len(rows) - len(shown)
        note = f' <span class="missing">({gone} photo(s) missing)</span>' if gone else ""
        sections.append(
            f"<section><h2>{html.escape(str(label))} <small>{len(rows)} image(s)</small>{note}</h2>"
            f"{''.join(shown)}</section>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}: catalogue</title><style>"
        "body{font-family:sans-serif;margin:1em}img{height:128px;margin:2px;object-fit:cover}"
        "h2{font-size:1.1em;margin:1em 0 .3em}small,.missing{color:#666;font-weight:normal}</style></head><body>"
        f"<h1>{html.escape(title)}: {table['label'].nunique()} identities, {len(table)} images</h1>"
        f'<p>Every photo is listed in <a href="{CATALOGUE}">{CATALOGUE}</a>.</p>{"".join(sections)}</body></html>\n'
    )
