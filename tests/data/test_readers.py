from pathlib import Path

import pandas as pd
import pytest

from kenning.data.readers import UNLABELLED, read_dataset, select_split
from kenning.errors import KenningError


def test_generic_layout(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("image,label,split\na.jpg,x,train\nb.jpg,,test\nc.jpg,y,test\n")
    df = read_dataset(tmp_path)
    assert list(df.columns) == ["image_id", "path", "label", "split", "sha256", "viewpoint", "encounter"]
    assert set(df["viewpoint"]) == {""} and set(df["encounter"]) == {""}  # none given, none in the names
    assert df["label"].tolist() == ["x", UNLABELLED, "y"]
    assert df["path"].iloc[0] == str(tmp_path / "a.jpg")
    assert select_split(df, "eval")["image_id"].tolist() == ["b.jpg", "c.jpg"]


def test_generic_without_split_is_all_train(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("image,label\na.jpg,x\n")
    assert read_dataset(tmp_path)["split"].tolist() == ["train"]


def test_landmark_layout(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("id,landmark_id\nabc123,7\n")
    df = read_dataset(tmp_path)
    assert df["path"].iloc[0] == str(tmp_path / "train" / "a" / "b" / "c" / "abc123.jpg")
    assert df["label"].iloc[0] == "7"


def test_whale_layout_new_whale_is_never_a_class(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("Image,Id\n1.jpg,w_1\n2.jpg,new_whale\n")
    df = read_dataset(tmp_path)
    assert df["label"].tolist() == ["w_1", UNLABELLED]
    assert df["path"].iloc[1] == str(tmp_path / "train" / "2.jpg")


def test_folder_layout(tmp_path: Path) -> None:
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "1.png").write_bytes(b"")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    df = read_dataset(tmp_path)
    assert sorted(df["label"]) == ["cat", "dog"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("labels.csv", "file,class\na.jpg,x\n", "lacks column.*image, label"),
        ("train.csv", "foo,bar\n1,2\n", "expected 'id,landmark_id'"),
    ],
)
def test_csv_without_expected_columns(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(KenningError, match=message):
        read_dataset(tmp_path)


def test_missing_folder_and_empty_split(tmp_path: Path) -> None:
    with pytest.raises(KenningError, match="not found"):
        read_dataset(tmp_path / "nope")
    df = pd.DataFrame({"image_id": ["a"], "path": ["a"], "label": ["x"], "split": ["train"]})
    with pytest.raises(KenningError, match="split 'test' is empty"):
        select_split(df, "test")
    with pytest.raises(KenningError, match="no evaluation split"):
        select_split(df, "eval")


def test_query_list_from_folder_and_csv(tmp_path: Path) -> None:
    from kenning.data.readers import read_query_list

    (tmp_path / "q" / "sub").mkdir(parents=True)
    for name in ("b.jpg", "sub/a.png", "notes.txt"):
        (tmp_path / "q" / name).write_bytes(b"x")
    listing = read_query_list(tmp_path / "q")
    assert listing["name"].tolist() == ["b.jpg", "a.png"] and listing["path"].str.endswith(("b.jpg", "a.png")).all()
    (tmp_path / "test.csv").write_text("id,url\nabc,http://x\n")
    assert read_query_list(tmp_path / "test.csv").values.tolist() == [["abc", str(tmp_path / "abc.jpg")]]
    (tmp_path / "bad.csv").write_text("file\nx.jpg\n")
    with pytest.raises(KenningError, match="expected one of path, image, Image, id"):
        read_query_list(tmp_path / "bad.csv")
    with pytest.raises(KenningError, match="query list not found"):
        read_query_list(tmp_path / "nope.csv")
