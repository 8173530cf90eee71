"""An index with local features: the local store follows the vector index through enrol, forget,
compact, a crash before the commit and concurrent writers, for every family's descriptor layout
(SIFT uint8, the learned families float16); a damaged local file is refused."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest

from kenning.config import IndexConfig, LocalConfig
from kenning.errors import KenningError
from kenning.index import files, store
from kenning.index.gallery import GalleryIndex
from kenning.index.manifest import GENERATION_FILE
from kenning.local.extractor import create_extractor
from kenning.local.featureset import LocalFeatures
from tests.index.test_store import _model, _unit
from tests.processes import run_together

LOCAL = {**LocalConfig(method="sift").__dict__}
FAMILIES = ["sift", "aliked", "xfeat"]


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The local store under each family's layout (the module's LOCAL and _features follow it)."""
    monkeypatch.setitem(LOCAL, "method", request.param)
    return request.param


def _features(seed: int) -> LocalFeatures:
    """Features whose descriptors encode the seed, so whose they are can be checked after every commit."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 6))
    layout = create_extractor(LOCAL["method"]).layout
    return LocalFeatures(
        keypoints=rng.random((n, 4)).astype(np.float32),
        descriptors=np.full((n, layout.dim), seed % 251, layout.dtype),
        weights=np.ones(n, np.float32),
        foreground=np.zeros((12, 12), np.float16),
        size=(64, 48),
    )


def _index(n: int = 20) -> GalleryIndex:
    index = GalleryIndex.new(_model(), "/models/m", IndexConfig(k=3, power=1.0), size=n, local=LOCAL)
    index.add(
        _unit(n, 0),
        [f"img{i}" for i in range(n)],
        [f"id{i % 5}" for i in range(n)],
        [f"/p/{i}.jpg" for i in range(n)],
        local=[_features(i) for i in range(n)],
    )
    return index


def _consistent(directory: Path) -> GalleryIndex:
    """Every live image has exactly its own local features, and nothing else is stored."""
    index = GalleryIndex.load(directory)
    live = index.live_local()
    assert sorted(live.ids.tolist()) == sorted(index.table["id"].tolist())
    for image_id, row_id in zip(index.table["image_id"], index.table["id"], strict=True):
        features = index.local_of(np.array([row_id]))[0]
        seed = int(image_id.removeprefix("img").removeprefix("new"))
        assert (features.descriptors == seed % 251).all() and len(features) == len(_features(seed))
    return index


def test_enrol_forget_compact_keep_the_local_store_with_the_images(family: str, tmp_path: Path) -> None:
    _index().save(tmp_path)
    store.enroll(
        tmp_path,
        _unit(3, 7),
        ["new100", "new101", "new102"],
        ["z"] * 3,
        [""] * 3,
        local=[_features(s) for s in (100, 101, 102)],
    )
    assert len(_consistent(tmp_path)) == 23
    store.forget(tmp_path, labels=["id1"], image_ids=["new101"])
    index = _consistent(tmp_path)
    assert len(index) == 23 - 4 - 1
    compacted = store.compact(tmp_path)
    assert len(compacted.delta.table) == 0 and len(compacted.removed) == 0
    index = _consistent(tmp_path)
    assert len(index) == 18
    names = {p.name for p in tmp_path.iterdir() if GENERATION_FILE.match(p.name)}
    m = index.manifest
    named = {m.base_file, m.base_table, m.delta_file, m.removed_file, m.local_base_file, m.local_delta_file}
    assert names == named | {m.history_file}  # the forget above, logged


def test_enrolment_without_local_features_is_refused_when_the_index_has_them(tmp_path: Path) -> None:
    _index().save(tmp_path)
    with pytest.raises(KenningError, match="local features"):
        store.enroll(tmp_path, _unit(1, 7), ["x"], ["z"], [""])
    assert GalleryIndex.load(tmp_path).manifest.count == 20


def test_crash_before_commit_leaves_local_store_of_the_previous_index(
    family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _index().save(tmp_path)

    def killed(*args, **kwargs):
        raise OSError("killed")

    monkeypatch.setattr(files, "atomic_write_json", killed)
    with pytest.raises(OSError, match="killed"):
        store.enroll(tmp_path, _unit(1, 5), ["new200"], ["z"], [""], local=[_features(200)])
    with pytest.raises(OSError, match="killed"):
        store.forget(tmp_path, labels=["id1"])
    monkeypatch.undo()
    assert len(_consistent(tmp_path)) == 20


def _enroll_many(directory: str, worker: int, count: int) -> None:
    for i in range(count):
        seed = 1000 + 100 * worker + i
        store.enroll(Path(directory), _unit(1, seed), [f"new{seed}"], [f"w{worker}"], [""], local=[_features(seed)])


def test_concurrent_enrolment_keeps_every_local_feature(tmp_path: Path) -> None:
    _index().save(tmp_path)
    run_together(_enroll_many, [(str(tmp_path), w, 8) for w in range(3)])
    assert len(_consistent(tmp_path)) == 20 + 24


def _file_mapped(array: np.ndarray) -> bool:
    """Whether the array's memory is a map of a file (kenning maps it itself, advised random access)."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


def test_a_loaded_base_is_memory_mapped_and_reads_as_written(family: str, tmp_path: Path) -> None:
    """The base's per-descriptor arrays come back as read-only maps of the file (a query reads only
    its shortlist's pages), equal to what was written; enrolments and forgetting read through them."""
    written = _index()
    written.save(tmp_path)
    index = GalleryIndex.load(tmp_path)
    for field in ("keypoints", "descriptors", "weights"):
        mapped = getattr(index.base_local, field)
        assert _file_mapped(mapped) and not mapped.flags.writeable
        np.testing.assert_array_equal(mapped, getattr(written.base_local, field))
    store.enroll(
        tmp_path, _unit(2, 7), ["new40", "new41"], ["id9"] * 2, [""] * 2, local=[_features(s) for s in (40, 41)]
    )
    store.forget(tmp_path, image_ids=["img3"])
    index = _consistent(tmp_path)
    assert _file_mapped(index.base_local.descriptors)
    with pytest.raises(KenningError, match="no local features"):
        index.local_of(np.array([10_000]))


@pytest.mark.parametrize("damage", ["garbage", "missing", "other_images", "truncated"])
def test_a_damaged_local_feature_file_is_refused_in_one_line(tmp_path: Path, damage: str) -> None:
    _index().save(tmp_path)
    path = tmp_path / GalleryIndex.load(tmp_path).manifest.local_base_file
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p != path}
    if damage == "garbage":
        path.write_bytes(b"not an npz file")
    elif damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        _index(n=21).base_local.save(path)
    with pytest.raises(KenningError) as caught:
        GalleryIndex.load(tmp_path)
    assert "\n" not in str(caught.value) and str(tmp_path) in str(caught.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p != path} == before
