"""Rename, merge and split on a saved index: labels move and nothing else, every refusal changes
nothing, a kill mid-commit leaves the previous index, concurrent enrolments are never lost, and
each curation is one line of the history."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kenning.errors import KenningError
from kenning.index import curation, files, store
from kenning.index.files import claim_for_build
from kenning.index.gallery import GalleryIndex
from kenning.index.history import read_history
from kenning.index.manifest import read_index_manifest
from tests.index.test_store import _index, _top_labels, _unit


def _saved(tmp_path: Path) -> Path:
    """40 base images (img0..img39, labels id0..id9 four each), two enrolled under id1, img3 (id3) forgotten."""
    _index().save(tmp_path)
    store.enroll(tmp_path, _unit(2, 50), ["e0", "e1"], ["id1", "id1"], ["/p/e0.jpg", "/p/e1.jpg"])
    store.forget(tmp_path, image_ids=["img3"])
    return tmp_path


def _state(directory: Path) -> pd.DataFrame:
    """Every live image: id, image id, label, path, viewpoint and its stored vector."""
    index = GalleryIndex.load(directory)
    table = index.table[["id", "image_id", "label", "path", "enrolled_at"]].sort_values("id").reset_index(drop=True)
    return table.assign(vector=list(index.vectors_of(table["id"].to_numpy())))


def _same_except_labels(before: pd.DataFrame, after: pd.DataFrame) -> pd.Series:
    """Which images changed label; everything else must be as it was."""
    assert before["id"].tolist() == after["id"].tolist()
    for column in ("image_id", "path", "enrolled_at"):
        assert before[column].tolist() == after[column].tolist(), column
    assert np.array_equal(np.stack(before["vector"]), np.stack(after["vector"]))
    return before["label"] != after["label"]


def test_rename_merge_split_move_labels_and_nothing_else(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    start = _state(directory)
    first = read_index_manifest(directory)
    base_file = first.base_file

    done = curation.rename(directory, "id2", "Humpback 2")
    assert (done.images, done.into, done.joined_existing) == (4, "Humpback 2", False)
    renamed = _state(directory)
    changed = _same_except_labels(start, renamed)
    assert start["label"][changed].eq("id2").all() and changed.sum() == 4
    assert renamed["label"][changed].eq("Humpback 2").all()

    # id1 has three base images and two enrolments: merging moves base rows and side-index rows alike
    done = curation.merge(directory, ["id1", "id4"], "id1")
    assert done.images == 10 and done.into == "id1"  # id1 (4 base + 2 enrolled) and id4 (4)
    merged = _state(directory)
    changed = _same_except_labels(renamed, merged)
    assert set(renamed["label"][changed]) == {"id4"} and "id4" not in set(merged["label"])
    index = GalleryIndex.load(directory)
    queries = index.vectors_of(merged["id"][merged["label"] == "id1"].to_numpy())
    assert [row[0] for row in _top_labels(index, queries, k=1)] == ["id1"] * len(queries)  # both former labels

    done = curation.split(directory, "id1", ["img4", "e1"], "id1-b")
    assert done.images == 2
    split = _state(directory)
    changed = _same_except_labels(merged, split)
    assert sorted(split["image_id"][changed]) == ["e1", "img4"] and set(split["label"][changed]) == {"id1-b"}
    done = curation.split(directory, "id1-b", ["e1"], "id5")  # into an existing identity
    assert done.joined_existing and _state(directory).set_index("image_id").at["e1", "label"] == "id5"

    manifest = read_index_manifest(directory)
    assert manifest.base_file == base_file  # the vectors were not rewritten
    rules = ("threshold", "calibration", "fusion", "normalise", "k", "power", "next_id", "uid")
    assert all(getattr(manifest, key) == getattr(first, key) for key in rules)  # calibrations stay valid
    assert manifest.count == len(start)
    lines = read_history(directory)
    assert [x["operation"] for x in lines] == ["forget", "rename", "merge", "split", "split"]
    assert lines[2]["labels"] == ["id1", "id4"] and lines[2]["into"] == "id1" and lines[2]["images"] == 10
    assert lines[3]["image_ids"] == ["img4", "e1"]
    compacted = store.compact(directory)  # compaction keeps labels and the log
    assert compacted.table.set_index("image_id").at["e1", "label"] == "id5" and len(read_history(directory)) == 5


REFUSALS = [
    (lambda d: curation.rename(d, "nobody", "x"), r"no label 'nobody' in index"),
    (lambda d: curation.rename(d, "id2", "id5"), r"identity 'id5' exists: .* use merge"),
    (lambda d: curation.rename(d, "id2", "id2"), r"already called"),
    (lambda d: curation.rename(d, "id2", read_index_manifest(d).unknown_label), r"unknown label and cannot name"),
    (lambda d: curation.rename(d, "id2", " padded"), r"starts or ends with whitespace"),
    (lambda d: curation.merge(d, ["id1", "id2"], "id5"), r"'id5' exists and is not among the merged labels"),
    (lambda d: curation.merge(d, ["id1", "id1"], "x"), r"two or more different --label"),
    (lambda d: curation.merge(d, ["id1", "nobody"], "x"), r"no label 'nobody'"),
    (lambda d: curation.split(d, "id1", ["img2"], "x"), r"no image 'img2' of 'id1'"),  # img2 is id2's
    (lambda d: curation.split(d, "id3", ["img3"], "x"), r"no image 'img3' of 'id3'"),  # forgotten
    (lambda d: curation.split(d, "id1", ["img1"], "id1"), r"another identity than 'id1'"),
    (lambda d: curation.split(d, "id1", [], "x"), r"needs the --id"),
]


@pytest.mark.parametrize(("call", "message"), REFUSALS)
def test_a_refused_curation_changes_nothing(tmp_path: Path, call, message: str) -> None:
    directory = _saved(tmp_path)
    before, manifest = _state(directory), read_index_manifest(directory)
    with pytest.raises(KenningError, match=message):
        call(directory)
    after = read_index_manifest(directory)
    assert after.generation == manifest.generation and _state(directory)["label"].equals(before["label"])


def _killed_at_commit(directory: str) -> None:
    """Merge, and die by SIGKILL when the new files are written and the manifest is about to be renamed."""
    files.atomic_write_json = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    curation.merge(Path(directory), ["id1", "id2"], "both")


def test_a_kill_mid_commit_leaves_the_previous_index(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    before, generation = _state(directory), read_index_manifest(directory).generation
    child = multiprocessing.get_context("spawn").Process(target=_killed_at_commit, args=(str(directory),))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    assert any(p.name.startswith("history-") for p in directory.iterdir())  # it had written its files
    assert read_index_manifest(directory).generation == generation
    assert _state(directory)["label"].equals(before["label"]) and len(read_history(directory)) == 1
    curation.merge(directory, ["id1", "id2"], "both")  # the next commit works, and sweeps the orphans
    manifest = read_index_manifest(directory)
    assert sorted(p.name for p in directory.glob("history-*")) == [manifest.history_file]
    assert set(_state(directory)["label"]) >= {"both"} and not {"id1", "id2"} & set(_state(directory)["label"])


def _enrol_into(directory: str, worker: int, count: int) -> None:
    for i in range(count):
        store.enroll(Path(directory), _unit(1, 700 + 100 * worker + i), [f"c{worker}-{i}"], ["id6"], [""])


def _merge_repeatedly(directory: str, worker: int, count: int) -> None:
    for _ in range(count):  # back and forth: id6 + id7 -> id6, then split the new ones off again
        curation.merge(Path(directory), ["id6", "id7"], "id6")
        moved = [f"img{j}" for j in range(7, 40, 10)]
        curation.split(Path(directory), "id6", moved, "id7")


def test_curation_beside_concurrent_enrolment_loses_nothing(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    jobs = [(str(directory), 1, 8), (str(directory), 2, 8)]
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_enrol_into, args=a) for a in jobs]
    workers.append(context.Process(target=_merge_repeatedly, args=(str(directory), 0, 4)))
    for w in workers:
        w.start()
    for w in workers:
        w.join(180)
        assert w.exitcode == 0
    index = GalleryIndex.load(directory)
    assert len(index) == 41 + 16 and index.table["id"].is_unique
    counts = index.label_counts()
    assert counts["id6"] == 4 + 16 and counts["id7"] == 4  # every enrolment kept, the split moved only id7's
    assert [x["operation"] for x in read_history(directory)][1:] == ["merge", "split"] * 4


def test_a_rebuild_over_a_curated_index_is_refused(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    store.compact(directory)
    assert claim_for_build(directory) == 42  # forgets alone: a rebuild loses nothing new
    curation.rename(directory, "id2", "two")
    with pytest.raises(KenningError, match=r"curated since its build .*kenning export.*--replace"):
        claim_for_build(directory)
