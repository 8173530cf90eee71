"""Issue 20, items 1-3 and 14: outputs never replace what a user owns. demo-data and eval --report
refuse a folder Kenning did not make however it looks; a rebuild keeps enrolments and forgotten
images unless told --replace, and never gives an old id to a new image; a submission never
overwrites its own query list or an existing file; a failing report leaves no half of itself."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kenning.index.gallery import GalleryIndex
from kenning.index.manifest import read_index_manifest
from tests.hostile.conftest import assert_refused, cli, snapshot
from tests.hostile.corpus import Corpus


def test_demo_data_refuses_a_users_dataset_that_looks_like_one(demo_dir: Path, tmp_path: Path) -> None:
    """Item 1: labels.csv + images/ is what a demo set holds, and what a user's dataset holds."""
    data = tmp_path / "my-whales"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.jpg").write_bytes(b"the user's photo")
    (data / "labels.csv").write_text("image,label\nimages/a.jpg,whale_1\n")
    before = snapshot(data)
    assert_refused(cli("demo-data", data), "is not a Kenning demo folder")
    assert snapshot(data) == before
    from kenning.data.demo import is_demo_dir

    assert is_demo_dir(demo_dir) and not is_demo_dir(data)  # a demo set Kenning wrote may be rewritten


def test_a_rebuild_refuses_to_drop_enrolments_and_never_reuses_ids(
    corpus: Corpus, index_copy: Path, trained_model: Path, demo_dir: Path
) -> None:
    """Item 2: before, the rebuild dropped the enrolment and numbered images from 0 again."""
    assert cli("enroll", corpus.good[0], "--index", index_copy, "--label", "newcomer").exit_code == 0
    old = read_index_manifest(index_copy)
    before = snapshot(index_copy)
    build = ["build-index", "--model", trained_model, "--data", demo_dir, "--split", "test", "--out", index_copy]
    assert_refused(cli(*build), "1 enrolment(s)", "--replace")
    assert snapshot(index_copy) == before

    assert cli("forget", "--index", index_copy, "--label", "newcomer").exit_code == 0  # an enrolment: dropped at once
    run = cli(*build, "--threshold", "0.5")  # nothing would be lost now
    assert run.exit_code == 0, run.stderr
    rebuilt = GalleryIndex.load(index_copy)
    assert rebuilt.manifest.uid != old.uid  # a new index: a service reopens it (tests/serve/test_security.py)
    assert rebuilt.base_table["id"].min() >= old.next_id  # no id a client holds names a new image

    image_id = str(rebuilt.image_ids_of(rebuilt.base_table["id"].to_numpy()[:1])[0])
    assert cli("forget", "--index", index_copy, "--id", image_id).exit_code == 0
    assert_refused(cli(*build), "1 forgotten image(s)", "bring the forgotten images back")
    run = cli(*build, "--threshold", "0.5", "--replace")
    assert run.exit_code == 0, run.stderr


def test_a_submission_never_overwrites_its_query_list_or_another_file(
    corpus: Corpus, index_copy: Path, tmp_path: Path
) -> None:
    """Item 3: `--out list.csv` over its own input replaced the list with the answers."""
    listing = tmp_path / "list.csv"
    listing.write_text("image\n" + "".join(f"{p}\n" for p in corpus.good[:2]))
    before = listing.read_bytes()
    assert_refused(cli("query", "--index", index_copy, "--batch", listing, "--out", listing), "query list itself")
    assert_refused(
        cli("query", "--index", index_copy, "--batch", listing, "--out", listing, "--replace"), "query list itself"
    )
    assert listing.read_bytes() == before
    mine = tmp_path / "mine.csv"
    mine.write_text("the user's numbers\n")
    assert_refused(cli("query", "--index", index_copy, "--batch", listing, "--out", mine), "exists", "--replace")
    assert mine.read_text() == "the user's numbers\n"
    run = cli("query", "--index", index_copy, "--batch", listing, "--out", mine, "--replace")
    assert run.exit_code == 0, run.stderr
    assert len(pd.read_csv(mine)) == 2


def test_eval_report_refuses_a_users_report_and_rewrites_its_own(
    index_copy: Path, demo_dir: Path, tmp_path: Path
) -> None:
    """Item 3: a folder of the user's with report.html and metrics.json looked like Kenning's."""
    users = tmp_path / "quarterly"
    users.mkdir()
    (users / "report.html").write_text("<p>the user's report</p>")
    (users / "metrics.json").write_text('{"revenue": 1}')
    before = snapshot(users)
    assert_refused(cli("eval", "--index", index_copy, "--data", demo_dir, "--report", users), "not a Kenning report")
    assert snapshot(users) == before
    ours = tmp_path / "report"
    for _ in range(2):  # written, then rewritten: Kenning's own
        run = cli("eval", "--index", index_copy, "--data", demo_dir, "--report", ours)
        assert run.exit_code == 0, run.stderr
    assert json.loads((ours / "metrics.json").read_text())["queries"] > 0
    assert not [p for p in ours.iterdir() if p.name.endswith(".tmp")]


def test_a_label_matplotlib_would_read_as_tex_is_drawn_as_text(
    trained_model: Path, demo_dir: Path, tmp_path: Path
) -> None:
    """Item 14: `Cost $\\foo$ hut` killed eval --report with a traceback and left half a report."""
    table = pd.read_csv(demo_dir / "labels.csv", dtype=str, keep_default_na=False)
    hostile = "Cost $\\foo$ hut"
    first = table.loc[table["split"] == "test", "label"].replace("", None).dropna().iloc[0]
    table["label"] = table["label"].replace(first, hostile)
    table["image"] = [str(demo_dir / p) for p in table["image"]]
    data = tmp_path / "data"
    data.mkdir()
    table.to_csv(data / "labels.csv", index=False)
    index = tmp_path / "index"
    run = cli("build-index", "--model", trained_model, "--data", data, "--split", "test", "--out", index)
    assert run.exit_code == 0, run.stderr
    report = tmp_path / "report"
    run = cli("eval", "--index", index, "--data", data, "--report", report)
    assert run.exit_code == 0, run.stderr + repr(run.exception)
    predictions = pd.read_csv(report / "predictions.csv", dtype=str, keep_default_na=False)
    assert (predictions == hostile).any().any()  # the label reached the report (and its figures)
    assert (report / "retrieval_grid.png").stat().st_size > 1000


def test_a_report_that_fails_halfway_leaves_the_previous_one(
    index_copy: Path, demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 14: the failed report left a half-written folder (metrics of the new run, figures of none)."""
    import kenning.eval.report as report_module

    report = tmp_path / "report"
    assert cli("eval", "--index", index_copy, "--data", demo_dir, "--report", report).exit_code == 0
    before = snapshot(report)

    def broken(*args: object) -> None:
        raise ValueError("a figure that cannot be drawn")

    monkeypatch.setattr(report_module, "plot_per_identity", broken)
    assert cli("eval", "--index", index_copy, "--data", demo_dir, "--report", report).exit_code != 0
    assert snapshot(report) == before  # the staged files were dropped, the old report is whole
    assert cli("eval", "--index", index_copy, "--data", demo_dir, "--report", tmp_path / "new").exit_code != 0
    assert not (tmp_path / "new").exists()  # a folder this call made is gone again
