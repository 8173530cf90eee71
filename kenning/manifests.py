"""Reading the JSON manifests that describe a model directory or an index directory.

A manifest is data from disk, so it is checked like input: the format, no foreign keys, and every
value of the type its dataclass field declares (a count written as "3", a NaN, a list where a
number belongs are refused by name), before any code uses it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from kenning.errors import KenningError
from kenning.paths import require_file

T = TypeVar("T")


def read_manifest(path: Path, cls: type[T], fmt: str, kind: str) -> T:
    """Load `path` into dataclass `cls`, refusing a missing file, another format, foreign keys or
    values of the wrong type."""
    if not path.exists() and not path.is_symlink():
        raise KenningError(f"not a Kenning {kind} directory (no {path.name}): {path.parent}")
    require_file(path, f"{kind} manifest")  # a FIFO or folder named manifest.json would block or fail later
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != fmt:
            found = data.get("format") if isinstance(data, dict) else None
            raise KenningError(f"{path}: unsupported {kind} format {found!r}, expected {fmt!r}")
        manifest = cls(**data)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, RecursionError) as exc:
        raise KenningError(f"{path} is not a valid {kind} manifest: {exc}") from None
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(manifest):
        value = getattr(manifest, f.name)
        if not _is(value, hints[f.name]):
            raise KenningError(f"{path} is damaged: {f.name} {_short(value)} is not {_describe(hints[f.name])}")
    return manifest


def _is(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the declared type (bool is not a number; numbers are finite)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_is(v, item) for v in value)
    if origin is dict or hint is dict:
        _, item = typing.get_args(hint) or (Any, Any)
        return isinstance(value, dict) and all(_is(v, item) for v in value.values())
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
