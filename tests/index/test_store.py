"""The index directory with both backends: add, search, enroll, forget, compact, save, load,
manifest refusals, crash safety and concurrent writers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from kenning.config import IndexConfig
from kenning.embeddings.checkpoint import ModelManifest
from kenning.errors import KenningError
from kenning.index import files, store
from kenning.index.files import claim_for_build
from kenning.index.gallery import GalleryIndex
from kenning.index.manifest import GENERATION_FILE, MANIFEST, read_index_manifest
from tests.processes import run_together

DIM = 16
# Annoy inspecting every node (search_k) is exact, so answers can be compared across rebuilds.
BACKENDS = [("faiss", "auto"), ("faiss", "HNSW8"), ("annoy", "trees=8")]
SEARCH = {"auto": "auto", "HNSW8": "efSearch=64", "trees=8": "search_k=100000"}


def _model(fingerprint: str = "abc") -> ModelManifest:
    return ModelManifest(
        backbone="b",
        image_size=8,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        embedding_dim=DIM,
        head_dim=DIM,
        gem_p=3.0,
        fingerprint=fingerprint,
    )


def _unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _index(backend: str = "faiss", index_type: str = "auto", n: int = 40, first_id: int = 0) -> GalleryIndex:
    cfg = IndexConfig(backend=backend, index_type=index_type, search_params=SEARCH[index_type], k=3, power=1.0)
    index = GalleryIndex.new(_model(), "/models/m", cfg, size=n, first_id=first_id)
    index.add(
        _unit(n, 0), [f"img{i}" for i in range(n)], [f"id{i % 10}" for i in range(n)], [f"/p/{i}.jpg" for i in range(n)]
    )
    return index


def _generation_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if GENERATION_FILE.match(p.name))


def _top_labels(index: GalleryIndex, queries: np.ndarray, k: int = 3) -> list[list[str]]:
    _, ids = index.search(queries, k)
    return index.labels_of(ids).tolist()


@pytest.mark.parametrize(("backend", "index_type"), BACKENDS)
def test_add_search_save_load(backend: str, index_type: str, tmp_path: Path) -> None:
    index = _index(backend, index_type)
    vectors = _unit(40, 0)
    index.save(tmp_path)
    loaded = GalleryIndex.load(tmp_path)
    assert len(loaded) == 40 and loaded.manifest.count == 40 and loaded.manifest.backend == backend
    sims, ids = loaded.search(vectors[[7, 12]], k=3)
    assert ids[:, 0].tolist() == [7, 12] and sims[:, 0] == pytest.approx([1.0, 1.0], abs=1e-4)
    assert loaded.labels_of(ids)[:, 0].tolist() == ["id7", "id2"]
    assert loaded.ids_of_images(["img3", "nope"]).tolist() == [3, -1]
    assert np.allclose(loaded.vectors_of(np.array([5])), vectors[5], atol=1e-5)
    _, excluded = loaded.search(vectors[[7]], k=3, exclude=np.array([7]))
    assert 7 not in excluded[0] and excluded.shape == (1, 3)


@pytest.mark.parametrize(("backend", "index_type"), BACKENDS)
def test_enroll_forget_compact(backend: str, index_type: str, tmp_path: Path) -> None:
    _index(backend, index_type).save(tmp_path)
    index = GalleryIndex.load(tmp_path)
    base_file = index.manifest.base_file
    new = _unit(2, 99)
    done = store.enroll(tmp_path, new, ["n0", "n1"], ["newcomer", "newcomer"], ["/p/n0.jpg", "/p/n1.jpg"])
    assert done.ids.tolist() == [40, 41] and done.image_ids == ["n0", "n1"]
    index.refresh(tmp_path)
    assert index.manifest.base_file == base_file  # the bulk index was not rewritten
    assert _top_labels(index, new[:1])[0][0] == "newcomer" and len(index) == 42

    assert store.forget(tmp_path, labels=["id3"]).count == 4  # base entries: tombstones
    assert store.forget(tmp_path, image_ids=["n1"]).count == 1  # an enrolment: dropped
    index = GalleryIndex.load(tmp_path)
    assert len(index) == 37 and index.manifest.count == 37
    everything = _top_labels(index, _unit(40, 0), k=37)
    assert not any("id3" in row for row in everything)
    assert index.ids_of_images(["n1", "n0"]).tolist() == [-1, 40]
    with pytest.raises(KenningError, match=r"no label 'id3' in index .*: nothing was forgotten"):
        store.forget(tmp_path, labels=["id3"])

    before = _top_labels(index, _unit(5, 7), k=5)
    compacted = store.compact(tmp_path)
    assert len(compacted.delta.table) == 0 and len(compacted.removed) == 0 and compacted.base.ntotal == 37
    reloaded = GalleryIndex.load(tmp_path)
    assert _top_labels(reloaded, _unit(5, 7), k=5) == before
    assert _generation_files(tmp_path) == sorted(
        [
            reloaded.manifest.base_file,
            *([reloaded.manifest.base_file + ".ids.npy"] if backend == "annoy" else []),
            reloaded.manifest.base_table,
            reloaded.manifest.delta_file,
            reloaded.manifest.removed_file,
            reloaded.manifest.history_file,  # the forgets above, logged
        ]
    )


def test_crash_before_commit_leaves_previous_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _index().save(tmp_path)

    def killed(*args, **kwargs):
        raise OSError("killed")

    monkeypatch.setattr(files, "atomic_write_json", killed)  # new files written, the manifest rename never happens
    with pytest.raises(OSError, match="killed"):
        store.enroll(tmp_path, _unit(1, 5), ["x"], ["z"], ["/p/x.jpg"])
    with pytest.raises(OSError, match="killed"):
        store.forget(tmp_path, labels=["id1"])
    with pytest.raises(OSError, match="killed"):
        _index(n=50, first_id=40).save(tmp_path)
    monkeypatch.undo()
    survivor = GalleryIndex.load(tmp_path)
    assert len(survivor) == 40 and survivor.manifest.generation == 1
    assert "z" not in set(survivor.table["label"]) and "id1" in set(survivor.table["label"])
    store.enroll(tmp_path, _unit(1, 5), ["x"], ["z"], ["/p/x.jpg"])  # the next commit sweeps the orphans
    m = GalleryIndex.load(tmp_path).manifest
    assert _generation_files(tmp_path) == sorted([m.base_file, m.base_table, m.delta_file, m.removed_file])


def _enroll_many(directory: str, worker: int, count: int) -> None:
    for i in range(count):
        store.enroll(Path(directory), _unit(1, 1000 * worker + i), [f"w{worker}-{i}"], [f"w{worker}"], [""])


def test_concurrent_enrolment_loses_nothing(tmp_path: Path) -> None:
    _index().save(tmp_path)
    run_together(_enroll_many, [(str(tmp_path), w, 15) for w in range(3)])
    index = GalleryIndex.load(tmp_path)
    assert len(index) == 40 + 45 and index.manifest.count == 85
    assert index.label_counts()[["w0", "w1", "w2"]].tolist() == [15, 15, 15]
    assert index.table["id"].is_unique


def _hold_lock(directory: str) -> None:
    from kenning.index.lock import index_lock

    with index_lock(Path(directory)):
        time.sleep(60)


def test_lock_of_a_killed_writer_is_released(tmp_path: Path) -> None:
    _index().save(tmp_path)
    holder = multiprocessing.get_context("spawn").Process(target=_hold_lock, args=(str(tmp_path),))
    holder.start()
    time.sleep(3)  # the holder has imported and taken the lock
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    store.enroll(tmp_path, _unit(1, 3), ["x"], ["z"], [""])
    assert GalleryIndex.load(tmp_path).manifest.count == 41


def test_manifest_is_checked_on_load(tmp_path: Path) -> None:
    import json

    _index().save(tmp_path)
    manifest_path = tmp_path / MANIFEST
    good = json.loads(manifest_path.read_text())
    for change, message in [
        ({"count": 39}, "manifest says 39"),
        ({"count": 41}, "count 41 exceeds the ids ever given"),
        ({"next_id": -1}, "next_id -1 is negative"),
        ({"generation": "1"}, "generation '1' is not int"),
        ({"embedding_dim": 32}, "32-d"),
        ({"backend": "annoy"}, "does not match its file"),
        ({"threshold": "NaN"}, "threshold 'NaN' is not float"),
        ({"unknown_label": "a\nb"}, "control character"),
        ({"unknown_label": 7}, "unknown_label 7 is not str"),
        ({"base_file": "../../etc/passwd.faiss"}, "not the name of an index file"),
        ({"format": "kenning-index/1"}, "unsupported index format"),
    ]:
        manifest_path.write_text(json.dumps({**good, **change}))
        with pytest.raises(KenningError, match=message):
            GalleryIndex.load(tmp_path)
    manifest_path.write_text(json.dumps(good))
    with pytest.raises(KenningError, match="built with model abc"):
        GalleryIndex.load(tmp_path).check_model(_model("other"))
    (tmp_path / good["base_file"]).write_bytes(b"garbage")
    with pytest.raises(KenningError, match="damaged"):
        GalleryIndex.load(tmp_path)
    with pytest.raises(KenningError, match="not a Kenning index"):
        GalleryIndex.load(tmp_path / "nothing")


def test_wrong_dimension_is_refused(tmp_path: Path) -> None:
    index = _index()
    with pytest.raises(KenningError, match="32-d but the index holds 16-d"):
        index.add(np.ones((1, 32), dtype=np.float32), ["x"], ["z"], ["p"])
    index.save(tmp_path)
    with pytest.raises(KenningError, match="32-d but the index holds 16-d"):
        store.enroll(tmp_path, np.ones((1, 32), dtype=np.float32), ["x"], ["z"], ["p"])


def test_a_rebuild_keeps_what_users_did_and_never_reuses_ids(tmp_path: Path) -> None:
    """Issue 20 item 2: a rebuild over an index with enrolments or forgotten images is refused
    without `replace`; ids continue after the old index's; a build whose ids clash is refused."""
    _index().save(tmp_path)
    assert claim_for_build(tmp_path) == 40  # nothing would be lost: allowed, ids go on from 40
    store.enroll(tmp_path, _unit(1, 3), ["x"], ["z"], [""])
    with pytest.raises(KenningError, match=r"1 enrolment.*0 forgotten.*--replace"):
        claim_for_build(tmp_path)
    with pytest.raises(KenningError, match="1 enrolment"):
        _index(first_id=41).save(tmp_path)  # checked again under the lock, at the commit
    with pytest.raises(KenningError, match="gave out image ids this build also uses"):
        _index().save(tmp_path, replace=True)  # ids 0..39 were given out
    uid = read_index_manifest(tmp_path).uid
    assert claim_for_build(tmp_path, replace=True) == 41
    _index(first_id=41).save(tmp_path, replace=True)
    rebuilt = GalleryIndex.load(tmp_path)
    assert rebuilt.manifest.uid != uid and rebuilt.base_table["id"].min() == 41 and len(rebuilt) == 40
