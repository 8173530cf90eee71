from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kenning.embeddings.checkpoint import ModelManifest
from kenning.errors import KenningError
from kenning.index.store import GalleryIndex


def _manifest(fingerprint: str = "abc") -> ModelManifest:
    return ModelManifest(
        backbone="b",
        image_size=8,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        embedding_dim=4,
        head_dim=4,
        gem_p=3.0,
        fingerprint=fingerprint,
    )


def _index(n: int = 4) -> GalleryIndex:
    index = GalleryIndex.new(_manifest(), "/models/m", "unknown", k=3, power=1.0, flip_tta=False)
    vectors = np.eye(4, dtype=np.float32)[:n]
    index.add(vectors, [f"img{i}" for i in range(n)], ["a", "a", "b", "c"][:n], [f"/p/{i}.jpg" for i in range(n)])
    return index


def test_add_search_save_load_roundtrip(tmp_path: Path) -> None:
    index = _index()
    index.save(tmp_path)
    loaded = GalleryIndex.load(tmp_path)
    assert len(loaded) == 4 and loaded.manifest.count == 4
    sims, ids = loaded.search(np.eye(4, dtype=np.float32)[[2]], k=2)
    assert ids[0, 0] == 2 and sims[0, 0] == pytest.approx(1.0)
    assert loaded.labels_of(ids)[0, 0] == "b"
    assert loaded.ids_of_images(["img3", "nope"]).tolist() == [3, -1]


def test_leave_one_out_excludes_only_itself() -> None:
    index = _index()
    q = np.eye(4, dtype=np.float32)[[0, 1]]
    _, ids = index.search(q, k=2, exclude=np.array([0, -1]))
    assert 0 not in ids[0].tolist() and ids[0].shape == (2,)
    assert ids[1, 0] == 1  # not excluded: finds itself


def test_enrol_after_load_keeps_old_entries_and_new_generation(tmp_path: Path) -> None:
    _index().save(tmp_path)
    index = GalleryIndex.load(tmp_path)
    index.add(np.full((1, 4), 0.5, dtype=np.float32), ["new"], ["d"], ["/p/new.jpg"])
    index.save(tmp_path)
    loaded = GalleryIndex.load(tmp_path)
    assert loaded.table["label"].tolist() == ["a", "a", "b", "c", "d"]
    assert loaded.manifest.generation == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery-2.parquet", "manifest.json", "vectors-2.faiss"]


def test_crash_during_save_leaves_previous_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _index(3).save(tmp_path)
    index = GalleryIndex.load(tmp_path)
    index.add(np.ones((1, 4), dtype=np.float32), ["x"], ["z"], ["/p/x.jpg"])

    def crash(self, *args, **kwargs):
        raise OSError("killed")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash)  # vectors written, table write dies
    with pytest.raises(OSError, match="killed"):
        index.save(tmp_path)
    monkeypatch.undo()
    survivor = GalleryIndex.load(tmp_path)
    assert len(survivor) == 3 and survivor.manifest.generation == 1


def test_index_refuses_another_model() -> None:
    with pytest.raises(KenningError, match="built with model abc"):
        _index().check_model(_manifest("other"))


def test_wrong_dimension_and_damaged_files(tmp_path: Path) -> None:
    index = _index()
    with pytest.raises(KenningError, match="8-d but the index holds 4-d"):
        index.add(np.ones((1, 8), dtype=np.float32), ["x"], ["z"], ["p"])
    index.save(tmp_path)
    (tmp_path / index.manifest.vectors_file).write_bytes(b"garbage")
    with pytest.raises(KenningError, match="damaged"):
        GalleryIndex.load(tmp_path)
    with pytest.raises(KenningError, match="not a Kenning index"):
        GalleryIndex.load(tmp_path / "nothing")
