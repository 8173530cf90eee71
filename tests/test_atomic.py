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


def test_files_follow_the_umask_and_a_folder_is_not_overwritten(tmp_path: Path) -> None:
    import os

    from kenning.errors import KenningError

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o640  # mkstemp alone would give 0600
    (tmp_path / "d").mkdir()
    with pytest.raises(KenningError, match="it is a folder"):
        atomic_write_text(tmp_path / "d", "x")


def test_sweep_removes_only_temporaries_of_the_names_given(tmp_path: Path) -> None:
    from kenning.atomic import sweep_temporaries, temporary_name

    for name in [
        ".base-3.faiss.ab12_x.tmp",
        ".manifest.json.zz9.tmp",
        ".notes.tmp",
        ".other.txt.a1.tmp",
        "base-3.faiss",
    ]:
        (tmp_path / name).write_text("x")
    swept = sweep_temporaries(tmp_path, temporary_name(r"base-\d+\.faiss|manifest\.json"))
    assert sorted(swept) == [".base-3.faiss.ab12_x.tmp", ".manifest.json.zz9.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.tmp", ".other.txt.a1.tmp", "base-3.faiss"]
