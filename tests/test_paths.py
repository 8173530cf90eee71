"""What a user's path is, said in one line before anything reads or writes it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kenning.errors import KenningError
from kenning.paths import path_kind, require_file, require_output_dir, require_output_file


def test_kinds(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    os.mkfifo(tmp_path / "p")
    assert path_kind(tmp_path / "f") == "a regular file"
    assert path_kind(tmp_path) == "a folder"
    assert path_kind(tmp_path / "p") == "a FIFO (named pipe)"
    assert path_kind("/dev/null") == "a character device"
    assert path_kind(tmp_path / "none") is None
    assert path_kind(tmp_path / "f" / "below") is None  # a parent is a file


def test_require_file_says_what_the_path_is_instead(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p")
    for path, message in [
        (tmp_path / "none", "image not found"),
        (tmp_path, "is a folder, not a file"),
        (tmp_path / "p", "is a FIFO"),
        (Path("/dev/zero"), "is a character device"),
    ]:
        with pytest.raises(KenningError, match=message):
            require_file(path, "image")


def test_outputs(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    assert require_output_file(tmp_path / "new.csv") == tmp_path / "new.csv"
    with pytest.raises(KenningError, match="it is a folder"):
        require_output_file(tmp_path)
    with pytest.raises(KenningError, match="is a regular file, not a folder"):
        require_output_file(tmp_path / "file" / "x.csv")
    with pytest.raises(KenningError, match="is a regular file, not a folder"):
        require_output_dir(tmp_path / "file", "index folder")
    with pytest.raises(KenningError, match="not empty and is not a Kenning index folder"):
        require_output_dir(tmp_path / "mine", "index folder", lambda p: False)
    assert require_output_dir(tmp_path / "mine", "index folder", lambda p: True) == tmp_path / "mine"
    assert require_output_dir(tmp_path / "new" / "deeper", "index folder", lambda p: False)
