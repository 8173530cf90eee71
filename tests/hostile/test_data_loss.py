"""Kenning deletes only what it made (issue 11, items 1, 2 and 11): a user's folder is refused, not
swept; enrolled image ids are unique so forgetting one never takes another; temporaries of killed
writers are swept at the next commit; files follow the umask."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

from kenning.index import store
from kenning.index.gallery import GalleryIndex
from kenning.index.manifest import read_index_manifest
from tests.hostile.conftest import assert_refused, cli, snapshot
from tests.hostile.corpus import Corpus

USER_FILES = {"base-camp.jpg": b"photo", "delta-notes.txt": b"notes", "removed-items.csv": b"a,b\n", "x.txt": b"x"}


def _user_folder(path: Path) -> Path:
    path.mkdir()
    for name, data in USER_FILES.items():
        (path / name).write_bytes(data)
    return path


def test_build_index_into_a_users_folder_is_refused_and_deletes_nothing(
    trained_model: Path, demo_dir: Path, tmp_path: Path
) -> None:
    folder = _user_folder(tmp_path / "photos")
    run = cli("build-index", "--model", trained_model, "--data", demo_dir, "--split", "test", "--out", folder)
    assert_refused(run, "is not empty and is not a Kenning index folder")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == USER_FILES  # not even a lock file added
    run = cli("eval", "--protocol", "reid", "--model", trained_model, "--data", demo_dir, "--index-out", folder)
    assert_refused(run, "is not a Kenning index folder")
    run = cli("train-embed", "--data", demo_dir, "--out", folder)
    assert_refused(run, "is not a Kenning model folder")
    run = cli("eval", "--index", tmp_path, "--data", demo_dir, "--report", folder)
    assert_refused(run, "is not a Kenning report folder")
    run = cli("demo-data", folder)
    assert_refused(run, "is not a Kenning demo folder")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == USER_FILES


def test_commits_keep_a_users_files_inside_an_index(index_copy: Path, corpus: Corpus, tmp_path: Path) -> None:
    """Only generation files by their exact names are swept: a user's base-camp.jpg in the index
    folder survives enrolment, forgetting, compaction and a rebuild."""
    for name, data in USER_FILES.items():
        (index_copy / name).write_bytes(data)
    assert cli("enroll", corpus.good[0], "--index", index_copy, "--label", "newcomer").exit_code == 0
    assert cli("forget", "--index", index_copy, "--label", "newcomer").exit_code == 0
    assert cli("build-index", "--compact", "--out", index_copy).exit_code == 0
    for name, data in USER_FILES.items():
        assert (index_copy / name).read_bytes() == data


def test_enrolled_image_ids_are_unique_and_forget_takes_one(corpus: Corpus, index_copy: Path, tmp_path: Path) -> None:
    """Item 2: camA/IMG_0001.jpg and camB/IMG_0001.jpg, two identities, two ids."""
    a, b = tmp_path / "camA" / "IMG_0001.jpg", tmp_path / "camB" / "IMG_0001.jpg"
    for path, source in ((a, corpus.good[0]), (b, corpus.good[1])):
        path.parent.mkdir()
        shutil.copy(source, path)
    first = cli("enroll", a, "--index", index_copy, "--label", "whale_A")
    second = cli("enroll", b, "--index", index_copy, "--label", "whale_B")
    assert first.exit_code == 0 and second.exit_code == 0, first.stderr + second.stderr
    assert "(image ids: IMG_0001.jpg)" in first.stdout
    index = GalleryIndex.load(index_copy)
    id_b = index.table.loc[index.table["label"] == "whale_B", "image_id"].item()
    assert id_b != "IMG_0001.jpg" and id_b.startswith("IMG_0001-") and f"(image ids: {id_b})" in second.stdout
    assert index.table["image_id"].is_unique

    run = cli("forget", "--index", index_copy, "--id", "IMG_0001.jpg")
    assert run.exit_code == 0 and "removed 1 image(s)" in run.stdout
    labels = set(GalleryIndex.load(index_copy).table["label"])
    assert "whale_A" not in labels and "whale_B" in labels


def test_same_bytes_again_is_a_noop_under_its_label_and_refused_under_another(
    corpus: Corpus, index_copy: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "renamed.jpg"
    shutil.copy(corpus.good[2], copy)
    assert cli("enroll", corpus.good[2], "--index", index_copy, "--label", "whale_C").exit_code == 0
    count = read_index_manifest(index_copy).count
    before = snapshot(index_copy)

    run = cli("enroll", copy, "--index", index_copy, "--label", "whale_C")  # same bytes, another name
    assert run.exit_code == 0 and "notice:" in run.stdout and "already enrolled as 'whale_C'" in run.stdout
    assert "enrolled 0 of 1" in run.stdout and snapshot(index_copy) == before

    run = cli("enroll", copy, "--index", index_copy, "--label", "whale_D")
    assert_refused(run, "already in index", "of 'whale_C'", "nothing was enrolled")
    assert snapshot(index_copy) == before

    run = cli(
        "enroll", corpus.good[3], corpus.good[3], "--index", index_copy, "--label", "whale_E"
    )  # twice in one call
    assert run.exit_code == 0 and "enrolled 1 of 2" in run.stdout and "notice:" in run.stdout
    assert read_index_manifest(index_copy).count == count + 1


def _killed_mid_write(directory: str) -> None:
    """Compaction killed by SIGKILL while writing its new base: a full-size temporary stays behind."""
    import signal

    from kenning.index import faiss_index

    def write_then_die(self, path: Path, progress: bool = False) -> None:
        from kenning.atomic import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_bytes(b"\0" * 100_000)
            os.kill(os.getpid(), signal.SIGKILL)

    faiss_index.FaissIndex.save = write_then_die
    store.compact(Path(directory))


def test_temporaries_of_killed_writers_are_swept_at_the_next_commit(corpus: Corpus, index_copy: Path) -> None:
    """Item 11: a compaction SIGKILLed mid-write leaves `.base-G.faiss.*.tmp`; the next commit
    (under the lock, so no writer is alive) removes it, and nothing that is not Kenning's."""
    assert cli("enroll", corpus.good[0], "--index", index_copy, "--label", "newcomer").exit_code == 0
    process = multiprocessing.get_context("spawn").Process(target=_killed_mid_write, args=(str(index_copy),))
    process.start()
    process.join(120)
    assert process.exitcode == -9
    leftovers = [p.name for p in index_copy.iterdir() if p.name.endswith(".tmp")]
    assert any(name.startswith(".base-") for name in leftovers), leftovers
    (index_copy / ".notes.tmp").write_text("the user's")  # not a name Kenning gives its temporaries
    assert GalleryIndex.load(index_copy).manifest.count > 0  # the killed compaction changed nothing

    assert cli("forget", "--index", index_copy, "--label", "newcomer").exit_code == 0
    assert sorted(p.name for p in index_copy.iterdir() if p.name.endswith(".tmp")) == [".notes.tmp"]


def test_index_files_follow_the_umask(trained_model: Path, demo_dir: Path, corpus: Corpus, tmp_path: Path) -> None:
    """Item 11: group members can read a catalogue made under umask 002 (mkstemp alone gives 0600)."""
    old = os.umask(0o002)
    try:
        out = tmp_path / "index"
        run = cli("build-index", "--model", trained_model, "--data", demo_dir, "--split", "test", "--out", out)
        assert run.exit_code == 0, run.stderr
        assert cli("enroll", corpus.good[0], "--index", out, "--label", "newcomer").exit_code == 0
        modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    finally:
        os.umask(old)
    assert set(modes.values()) == {0o664}, modes
