"""Viewpoints and encounters: given as labels.csv columns, else read from nyala-style file names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kenning.data.metadata import compatible, from_name, parse_compatible, with_metadata
from kenning.data.readers import read_dataset
from kenning.errors import KenningError


def test_nyala_names_state_flank_and_sighting() -> None:
    assert from_name("images/test/1/14_leftphoto.jpg") == ("left", "images/test/1/14")
    assert from_name("images/test/1/14_RightPhoto.JPG") == ("right", "images/test/1/14")
    assert from_name("lion_03.jpg") == ("", "")  # no statement: unknown, compatible with all


def test_given_columns_win_and_empty_cells_fall_back_to_names(tmp_path: Path) -> None:
    for name in ("a.jpg", "7_leftphoto.jpg", "8_rightphoto.jpg"):
        Image.new("RGB", (8, 8), (len(name), 0, 0)).save(tmp_path / name)
    pd.DataFrame(
        {
            "image": ["a.jpg", "7_leftphoto.jpg", "8_rightphoto.jpg"],
            "label": ["x", "x", "y"],
            "viewpoint": ["Front", "", "fluke"],
            "encounter": ["e1", "", ""],
        }
    ).to_csv(tmp_path / "labels.csv", index=False)
    table = read_dataset(tmp_path).set_index("image_id")
    assert table.loc["a.jpg", ["viewpoint", "encounter"]].tolist() == ["front", "e1"]
    assert table.loc["7_leftphoto.jpg", ["viewpoint", "encounter"]].tolist() == ["left", "7"]
    assert table.loc["8_rightphoto.jpg", "viewpoint"] == "fluke"  # given beats the name


def test_compatibility_is_equal_or_unknown_unless_declared() -> None:
    gallery = np.array(["left", "right", "", "front"], dtype=object)
    assert compatible("left", gallery).tolist() == [True, False, True, False]
    assert compatible("", gallery).all()
    pairs = parse_compatible("front=left")
    assert compatible("left", gallery, pairs).tolist() == [True, False, True, True]
    with pytest.raises(KenningError, match="not 'view=view'"):
        parse_compatible("front")


def test_unprintable_metadata_is_refused() -> None:
    with pytest.raises(KenningError, match="printable"):
        with_metadata(pd.DataFrame({"image_id": ["a.jpg"], "viewpoint": ["left\x1b[2J"]}))
