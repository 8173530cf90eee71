"""Reading the JSON manifests that describe a model directory or an index directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from kenning.errors import KenningError

T = TypeVar("T")


def read_manifest(path: Path, cls: type[T], fmt: str, kind: str) -> T:
    """Load `path` into dataclass `cls`, refusing a missing file, another format or foreign keys."""
    if not path.is_file():
        raise KenningError(f"not a Kenning {kind} directory (no {path.name}): {path.parent}")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != fmt:
            found = data.get("format") if isinstance(data, dict) else None
            raise KenningError(f"{path}: unsupported {kind} format {found!r}, expected {fmt!r}")
        return cls(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise KenningError(f"{path} is not a valid {kind} manifest: {exc}") from None
