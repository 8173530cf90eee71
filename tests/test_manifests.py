from dataclasses import dataclass
from pathlib import Path

import pytest

from kenning.errors import KenningError
from kenning.manifests import read_manifest


@dataclass
class Thing:
    size: int
    format: str = "thing/1"


def test_reads_and_refuses(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text('{"size": 3, "format": "thing/1"}')
    assert read_manifest(path, Thing, "thing/1", "thing") == Thing(3)
    path.write_text('{"size": 3, "format": "thing/2"}')
    with pytest.raises(KenningError, match="unsupported thing format 'thing/2'"):
        read_manifest(path, Thing, "thing/1", "thing")
    path.write_text('{"size": 3, "colour": "red", "format": "thing/1"}')
    with pytest.raises(KenningError, match="not a valid thing manifest"):
        read_manifest(path, Thing, "thing/1", "thing")
    path.write_text("{not json")
    with pytest.raises(KenningError, match="not a valid thing manifest"):
        read_manifest(path, Thing, "thing/1", "thing")
    with pytest.raises(KenningError, match="not a Kenning thing directory"):
        read_manifest(tmp_path / "none" / "manifest.json", Thing, "thing/1", "thing")
