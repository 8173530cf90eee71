from pathlib import Path

import pytest

from kenning.data.readers import read_dataset, select_split
from kenning.index import files, gallery, manifest
from kenning.index.gallery import GalleryIndex
from kenning.recognizer import Recognizer


def test_recognizer_loads_once_and_answers(built_index: Path, demo_dir: Path) -> None:
    recognizer = Recognizer.open(built_index, progress=False)
    test = select_split(read_dataset(demo_dir), "test")
    image = test[test["label"] != ""].iloc[0]
    answer = recognizer.query([image["path"], str(demo_dir / "missing.jpg")])
    assert answer[0].labels[0] == image["label"]  # the image is in the gallery itself
    assert isinstance(answer[1], str) and "image not found" in answer[1]
    assert GalleryIndex.load(built_index).manifest.threshold is not None  # calibrated at build time


def test_warm_queries_read_nothing_from_the_index_again(
    built_index: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faiss
    import pandas as pd
    import pyarrow.parquet as pq
    import torch

    recognizer = Recognizer.open(built_index, progress=False)
    image = next((demo_dir / "images" / "test").glob("landmark_*/0.jpg"))
    first = recognizer.query([str(image)])[0]

    def no_io(*args, **kwargs):
        raise AssertionError("index or model read again")

    for module, name in [(faiss, "read_index"), (pq, "read_table"), (pd, "read_parquet"), (torch, "load")]:
        monkeypatch.setattr(module, name, no_io)
    for module in (gallery, files, manifest):  # each holds the name (defined or imported)
        monkeypatch.setattr(module, "read_index_manifest", no_io)
    for _ in range(3):
        again = recognizer.query([str(image)])[0]
        assert again.labels == first.labels
    assert recognizer.query([str(image)] * 4)[3].labels == first.labels  # a batch reuses them too
