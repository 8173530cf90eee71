"""Curation from the command line, on a real model and index: rename, merge, split, history, and
export -> build-index -> query answering as the source index does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kenning.index.gallery import GalleryIndex
from kenning.index.manifest import read_index_manifest
from tests.hostile.conftest import assert_refused, cli, snapshot


@pytest.fixture()
def index_copy(built_index: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built_index, tmp_path / "index"))


def _labels(index: Path) -> pd.Series:
    return GalleryIndex.load(index).table.set_index("image_id")["label"]


def _answers(index: Path, photos: list[Path]) -> list[list[tuple[str, float | None]]]:
    """Each photo's five answers: label and confidence (None for the unknown answer)."""
    run = cli("query", *photos, "--index", index, "--json")
    assert run.exit_code == 0, run.stderr
    rounded = [
        [(a["label"], a["confidence"] and round(a["confidence"], 4)) for a in r["predictions"]]
        for r in json.loads(run.stdout)
    ]
    return rounded


def test_rename_merge_split_and_history(index_copy: Path, demo_dir: Path) -> None:
    before = _labels(index_copy)
    a, b, c, d = sorted(before.unique())[:4]
    run = cli("rename", "--index", index_copy, "--label", a, "--to", "Hut on the ridge")
    assert run.exit_code == 0, run.stderr
    assert f"{(before == a).sum()} image(s) of {a!r} are now the identity 'Hut on the ridge'" in run.stdout

    run = cli("merge", "--index", index_copy, "--label", b, "--label", c, "--into", b)
    assert run.exit_code == 0, run.stderr
    table = GalleryIndex.load(index_copy).table
    photos_of_c = [Path(p) for p in table[table["image_id"].isin(before[before == c].index)]["path"]]
    assert all(r[0][0] == b for r in _answers(index_copy, photos_of_c))  # the merged identity answers c's photos

    moved = before[before == d].index[:1].tolist()
    run = cli("split", "--index", index_copy, "--label", d, "--id", moved[0], "--into", f"{d}-second")
    assert run.exit_code == 0, run.stderr
    after = _labels(index_copy)
    expected = before.replace({a: "Hut on the ridge", c: b})
    expected[moved[0]] = f"{d}-second"
    assert after.sort_index().equals(expected.sort_index())  # those moved, and nothing else

    run = cli("history", "--index", index_copy)
    lines = run.stdout.splitlines()
    assert run.exit_code == 0 and len(lines) == 3
    assert "rename" in lines[0] and f"merge {b!r}, {c!r} -> {b!r}" in lines[1] and moved[0] in lines[2]

    untouched = snapshot(index_copy)
    for args, needle in [
        (("rename", "--label", "nobody", "--to", "x"), "no label 'nobody'"),
        (("merge", "--label", b, "--label", d, "--into", "Hut on the ridge"), "not among the merged labels"),
        (("split", "--label", d, "--id", "missing.jpg", "--into", "x"), "no image 'missing.jpg'"),
    ]:
        assert_refused(cli(*args[:1], "--index", index_copy, *args[1:]), needle, "nothing was changed")
    assert snapshot(index_copy) == untouched


def test_export_then_build_index_answers_as_the_source(
    index_copy: Path, trained_model: Path, demo_dir: Path, tmp_path: Path
) -> None:
    labels = _labels(index_copy)
    first, second = sorted(labels.unique())[:2]
    assert cli("merge", "--index", index_copy, "--label", first, "--label", second, "--into", "A/B: one").exit_code == 0
    enrol = sorted((demo_dir / "enroll").glob("*.jpg"))
    done = cli("enroll", enrol[0], "--index", index_copy, "--label", "new one", "--viewpoint", "left")
    assert done.exit_code == 0, done.stderr

    out = tmp_path / "export"
    run = cli("export", "--index", index_copy, "--out", out, "--quiet")
    assert run.exit_code == 0, run.stderr
    catalogue = pd.read_csv(out / "catalogue.csv", dtype=str, keep_default_na=False)
    source = GalleryIndex.load(index_copy).table
    assert sorted(catalogue["image_id"]) == sorted(source["image_id"]) and (catalogue["image"] != "").all()
    assert set(catalogue["label"]) == set(source["label"]) and "A/B: one" in set(catalogue["label"])
    merged_folder = {Path(i).parts[0] for i in catalogue[catalogue["label"] == "A/B: one"]["image"]}
    assert len(merged_folder) == 1 and "/" not in merged_folder.pop()  # a label no folder name can hold
    for row in catalogue.itertuples():
        assert (out / row.image).read_bytes() == Path(row.source_path).read_bytes()
    enrolled = GalleryIndex.load(index_copy).table["image_id"].iloc[-1]
    assert catalogue.set_index("image_id").at[enrolled, "viewpoint"] == "left"
    page = (out / "index.html").read_text()
    assert page.count("<section>") == catalogue["label"].nunique() and "A/B: one" in page

    rebuilt = tmp_path / "rebuilt"
    threshold = read_index_manifest(index_copy).threshold
    run = cli(
        "build-index", "--model", trained_model, "--data", out, "--out", rebuilt, "--k", "5",
        "--threshold", str(threshold),
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert _labels(rebuilt).sort_index().equals(_labels(index_copy).sort_index())  # same ids, same labels
    photos = [*enrol, *sorted((demo_dir / "images" / "test").rglob("*.jpg"))[:12]]
    assert _answers(rebuilt, photos) == _answers(index_copy, photos)


def test_export_refuses_a_foreign_folder_and_rewrites_its_own(index_copy: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's file")
    assert_refused(cli("export", "--index", index_copy, "--out", foreign), "is not empty and is not a Kenning export")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    out = tmp_path / "export"
    assert cli("export", "--index", index_copy, "--out", out, "--quiet").exit_code == 0
    catalogue = pd.read_csv(out / "catalogue.csv", dtype=str, keep_default_na=False)
    label = catalogue["label"].iloc[0]
    kept = out / catalogue["image"].iloc[-1]
    stamp = kept.stat().st_mtime_ns
    assert cli("rename", "--index", index_copy, "--label", label, "--to", "renamed").exit_code == 0
    assert cli("export", "--index", index_copy, "--out", out, "--quiet").exit_code == 0
    assert not (out / label).exists() and (out / "renamed").is_dir()  # the old folder went with its label
    assert kept.stat().st_mtime_ns == stamp  # photos already there are not copied again

    gone = Path(catalogue["source_path"].iloc[-1])
    moved_away = tmp_path / "elsewhere.jpg"
    shutil.move(gone, moved_away)
    try:
        assert cli("export", "--index", index_copy, "--out", out, "--quiet").exit_code == 0
        assert kept.is_file()  # the copy an earlier export made stays
        run = cli("export", "--index", index_copy, "--out", tmp_path / "fresh", "--quiet")
        assert run.exit_code == 0, run.stderr
        assert "1 photo(s) are no longer where they were indexed" in run.stderr
        fresh = pd.read_csv(tmp_path / "fresh" / "catalogue.csv", dtype=str, keep_default_na=False)
        assert fresh.set_index("source_path").at[str(gone), "image"] == ""  # listed, with no photo
    finally:
        shutil.move(moved_away, gone)

    (out / "renamed" / "stray.jpg").write_bytes(b"not ours")
    assert_refused(cli("export", "--index", index_copy, "--out", out), "is not a Kenning export")
    (out / "catalogue.csv").write_text("foo\n1\n")  # a catalogue someone rewrote: read, never guessed
    assert_refused(cli("export", "--index", index_copy, "--out", out), "is not an export's catalogue")


def test_history_of_an_uncurated_index_and_of_a_damaged_log(index_copy: Path) -> None:
    run = cli("history", "--index", index_copy)
    assert run.exit_code == 0 and "nothing curated" in run.stdout
    label = _labels(index_copy).iloc[0]
    assert cli("rename", "--index", index_copy, "--label", label, "--to", "renamed").exit_code == 0
    log = index_copy / read_index_manifest(index_copy).history_file
    log.write_bytes(b"{" * len(log.read_bytes()))  # the same size: only the content is wrong
    assert_refused(cli("history", "--index", index_copy), "is damaged", log.name)
    log.write_bytes(b"{")
    assert_refused(cli("history", "--index", index_copy), "is damaged", "truncated or replaced")


def _slow_export(index: str, out: str) -> None:
    """An export whose copies take a while, so that the test can kill it midway."""
    import time

    from kenning import export

    copy = export.shutil.copyfile
    export.shutil.copyfile = lambda source, target: (time.sleep(0.05), copy(source, target))
    export.export_catalogue(index, out, progress=False)


def test_a_killed_export_resumes(index_copy: Path, tmp_path: Path) -> None:
    import multiprocessing
    import os
    import signal
    import time

    out = tmp_path / "export"
    child = multiprocessing.get_context("spawn").Process(target=_slow_export, args=(str(index_copy), str(out)))
    child.start()
    deadline = time.monotonic() + 120
    while len([p for p in out.rglob("*.jpg")]) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert not (out / "catalogue.csv").exists() and (out / ".catalogue-partial.csv").exists()  # killed midway
    run = cli("export", "--index", index_copy, "--out", out, "--quiet")
    assert run.exit_code == 0, run.stderr
    catalogue = pd.read_csv(out / "catalogue.csv", dtype=str, keep_default_na=False)
    assert len(catalogue) == len(GalleryIndex.load(index_copy).table) and (catalogue["image"] != "").all()
    for row in catalogue.itertuples():
        assert (out / row.image).read_bytes() == Path(row.source_path).read_bytes()
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == {*catalogue["image"], "catalogue.csv", "index.html", ".kenning-export", ".kenning-export.lock"}
