from pathlib import Path

import pytest

from kenning.atomic import atomic_save, atomic_write_text


def test_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_crash_mid_write_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "precious")

    def crashing_writer(p: Path) -> None:
        p.write_text("half-writ")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_save(target, crashing_writer)
    assert target.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temp file left behind
