"""An image listed twice, by path or by bytes, is kept once, with one warning."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kenning.data.duplicates import drop_duplicates, file_digest


def test_by_path_and_by_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, data in [
        ("a.jpg", b"A"),
        ("b.jpg", b"B"),
        ("a-copy.jpg", b"A"),
        ("empty1.jpg", b""),
        ("empty2.jpg", b""),
    ]:
        (tmp_path / name).write_bytes(data)
    names = ["a.jpg", "b.jpg", "a.jpg", "a-copy.jpg", "empty1.jpg", "empty2.jpg", "missing.jpg"]
    table = pd.DataFrame(
        {"image_id": names, "path": [str(tmp_path / n) for n in names], "label": ["x", "y", "x", "z", "", "", ""]}
    )
    kept = drop_duplicates(table, "labels.csv")
    assert kept["image_id"].tolist() == ["a.jpg", "b.jpg", "empty1.jpg", "empty2.jpg", "missing.jpg"]
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and warning.startswith("warning: labels.csv: kept one of each duplicated image")
    assert "1 listed again under the same path" in warning and "'a-copy.jpg' = 'a.jpg'" in warning
    assert "1 of them under different labels" in warning
    assert file_digest(str(tmp_path / "empty1.jpg")) == "" and file_digest(str(tmp_path)) == ""


def test_no_duplicates_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.jpg").write_bytes(b"A")
    table = pd.DataFrame({"image_id": ["a.jpg"], "path": [str(tmp_path / "a.jpg")], "label": ["x"]})
    assert len(drop_duplicates(table, "labels.csv")) == 1 and capsys.readouterr().err == ""
