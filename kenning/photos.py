"""The photos a service keeps for what it enrols: one file per content, named `<sha256>.<ext>`.

`kenning serve` keeps each enrolled upload (thumbnails and compaction need the image later) in a
photos folder, `INDEX-photos` beside the index unless told otherwise. Forgetting a person must
not leave their photos behind, and must never delete anything else: a file is deleted only when
it lies directly in that folder, is named by Kenning's rule, its bytes hash to its name (so it is
a copy Kenning wrote, not a user's file), and no live image of the index names it any more.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from kenning.atomic import atomic_save
from kenning.paths import path_kind

KEPT_NAME = re.compile(r"^(?P<digest>[0-9a-f]{64})\.(?:jpg|png|webp|bmp|gif|tif)$")


def default_photos_dir(index_dir: Path) -> Path:
    """Where `serve` keeps uploads and `forget` looks for them when not told: INDEX-photos beside it."""
    index_dir = Path(index_dir)
    return index_dir.parent / f"{index_dir.name}-photos"


def keep(photos_dir: Path, data: bytes, suffix: str) -> tuple[Path, bool]:
    """The kept copy of `data` (written atomically when new); whether this call created it."""
    photos_dir.mkdir(parents=True, exist_ok=True)
    path = photos_dir / f"{hashlib.sha256(data).hexdigest()}{suffix}"
    if path_kind(path) == "a regular file":
        return path, False
    atomic_save(path, lambda target: target.write_bytes(data))
    return path, True


def delete_kept(photos_dir: Path, paths: list[str]) -> list[str]:
    """Delete the kept copies among `paths` (images no live index entry names); returns their names.
    Call under the index's lock, so that no enrolment can name one of them meanwhile."""
    folder = Path(photos_dir).resolve()
    deleted = []
    for text in paths:
        path = Path(text)
        match = KEPT_NAME.match(path.name)
        if match is None or path.parent.resolve() != folder or path_kind(path) != "a regular file":
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != match["digest"]:
            continue  # not a copy Kenning made: its bytes are not what its name says
        path.unlink(missing_ok=True)
        deleted.append(path.name)
    return deleted
