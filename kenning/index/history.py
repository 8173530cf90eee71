"""The curation log of an index: one JSON line per rename, merge, split or forget (time, operation,
labels, images changed). It is a generation file of the commit that made the change, so the change
and its line land together or not at all; the log is small (curation is by hand), so each commit
copies it with one more line."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kenning.atomic import atomic_save
from kenning.errors import KenningError, first_line
from kenning.index.manifest import IndexManifest, check_files, read_index_manifest


def event(operation: str, labels: list[str], images: int, **details: Any) -> dict[str, Any]:
    """One line of the log: `labels` the identities the operation was given, `images` how many it changed."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {"time": now, "operation": operation, "labels": labels, "images": images, **details}


def write_history(directory: Path, manifest: IndexManifest, generation: int, line: dict[str, Any]) -> str:
    """The log of `manifest` with `line` appended, as generation `generation`'s file; returns its name."""
    old = (directory / manifest.history_file).read_bytes() if manifest.history_file else b""
    name = f"history-{generation}.jsonl"
    data = old + json.dumps(line, ensure_ascii=False).encode() + b"\n"
    atomic_save(directory / name, lambda p: p.write_bytes(data))
    return name


def read_history(directory: str | Path) -> list[dict[str, Any]]:
    """Every line of the committed log, oldest first ([] when nothing was curated since the build)."""
    directory = Path(directory)
    manifest = read_index_manifest(directory)
    if not manifest.history_file:
        return []
    check_files(directory, manifest)  # a truncated or replaced log is refused like any index file
    try:
        text = (directory / manifest.history_file).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KenningError(f"index {directory} is damaged: {manifest.history_file}: {first_line(exc)}") from None
