"""No silently wrong answers (issue 11, items 3-5): calibration that works from any folder or fails
loudly, duplicates that never count as matches, labels that round-trip or are refused by name."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kenning.build import build_index
from kenning.data.readers import read_dataset, select_split
from kenning.eval.evaluate import evaluate
from kenning.eval.kaggle_files import read_landmark_submission, read_whale_submission
from kenning.recognizer import Recognizer
from tests.conftest import small_config
from tests.hostile.conftest import assert_refused, cli, snapshot
from tests.hostile.corpus import Corpus

THRESHOLD = re.compile(r"unknown threshold (\S+) \(calibrated for map@5 on (\d+) held-out queries")


def _train_quick(data: str | Path, out: str | Path) -> None:
    run = cli(
        "train-embed", "--data", data, "--out", out, "--epochs", "0", "--image-size", "64", "--embedding-dim", "0",
        "--set", "train.holdout_fraction=0.3",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr


def _calibrated(model: Path, data: Path, out: Path) -> tuple[str, int]:
    run = cli("build-index", "--model", model, "--data", data, "--split", "test", "--out", out, "--k", "5")
    assert run.exit_code == 0, run.stderr
    found = THRESHOLD.search(run.stdout)
    assert found, run.stdout
    return found.group(1), int(found.group(2))


def test_model_directory_works_from_any_folder_and_moved_with_its_data(
    demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 3: trained with a relative --data, then used from another folder, then moved with its
    data, then moved alone: the same calibration each time; data gone: a loud refusal."""
    work = tmp_path / "work"
    shutil.copytree(demo_dir, work / "demo")
    monkeypatch.chdir(work)
    _train_quick("demo", "model")
    reference = _calibrated(Path("model"), Path("demo"), tmp_path / "i0")
    assert reference[1] > 0

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert _calibrated(work / "model", work / "demo", tmp_path / "i1") == reference

    alone = tmp_path / "alone" / "model"
    shutil.copytree(work / "model", alone)
    assert _calibrated(alone, work / "demo", tmp_path / "i2") == reference  # data found where it was

    moved = tmp_path / "moved"
    shutil.move(work, moved)
    assert _calibrated(moved / "model", moved / "demo", tmp_path / "i3") == reference  # found beside the model

    shutil.rmtree(moved / "demo" / "images" / "train")  # the held-out images are gone
    run = cli("build-index", "--model", alone, "--data", moved / "demo", "--split", "test", "--out", tmp_path / "i4")
    assert_refused(run, "cannot calibrate the unknown threshold", "held-out images", "are missing", "--threshold")
    assert not (tmp_path / "i4").exists()  # refused before the gallery was embedded
    run = cli("eval", "--protocol", "catalogue", "--model", alone, "--data", moved / "demo", "--split", "test")
    assert_refused(run, "cannot calibrate the unknown threshold")
    run = cli(
        "build-index", "--model", alone, "--data", moved / "demo", "--split", "test", "--out", tmp_path / "i5",
        "--threshold", "0.5",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr  # a threshold given by hand needs no held-out images


def test_holdout_written_relative_to_an_old_working_folder_fails_loudly(
    demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model trained before paths were stored relative to it: from another folder, refused."""
    monkeypatch.chdir(tmp_path)
    _train_quick(demo_dir, "model")
    holdout = pd.read_csv("model/holdout.csv", dtype=str, keep_default_na=False)
    relative = [str(Path(p).relative_to(demo_dir.parent)) for p in holdout["source_path"]]
    holdout.assign(path=relative).drop(columns="source_path").to_csv("model/holdout.csv", index=False)
    run = cli("build-index", "--model", "model", "--data", demo_dir, "--split", "test", "--out", "index")
    assert_refused(run, "cannot calibrate the unknown threshold")


def _doubled(demo_dir: Path, out: Path) -> Path:
    """The demo set with every test image listed twice by path and once more as a byte-identical copy."""
    table = pd.read_csv(demo_dir / "labels.csv", dtype=str, keep_default_na=False)
    test = table[table["split"] == "test"]
    copies = test.assign(image=[f"copies/{i}.jpg" for i in range(len(test))])
    (out / "copies").mkdir(parents=True)
    for source, copy in zip(test["image"], copies["image"], strict=True):
        shutil.copy(demo_dir / source, out / copy)
    absolute = test.assign(image=[str(demo_dir / i) for i in test["image"]])
    pd.concat([absolute, absolute, copies.assign(image=[str(out / c) for c in copies["image"]])]).to_csv(
        out / "labels.csv", index=False
    )
    return out


def test_duplicated_images_never_count_as_their_own_match(trained_model: Path, demo_dir: Path, tmp_path: Path) -> None:
    """Item 4: listed twice (by path and by bytes), the gallery holds each image once and the
    figures are those of the clean set, not MAP@5 1.000."""
    doubled = _doubled(demo_dir, tmp_path / "doubled")
    clean_gallery = select_split(read_dataset(demo_dir), "test")
    cfg = small_config().index
    cfg.threshold = 0.5
    build_index(trained_model, clean_gallery, cfg, tmp_path / "clean", progress=False)
    clean = evaluate(Recognizer.open(tmp_path / "clean", progress=False), clean_gallery).metrics

    run = cli(
        "build-index",
        "--model",
        trained_model,
        "--data",
        doubled,
        "--out",
        tmp_path / "dup",
        "--threshold",
        "0.5",
        "--k",
        "5",
    )
    assert run.exit_code == 0, run.stderr
    n = len(clean_gallery)
    assert f"{n} listed again under the same path" in run.stderr
    assert f"{n} with the same bytes as another" in run.stderr
    assert f"indexed {(clean_gallery['label'] != '').sum()} images" in run.stdout  # each labelled image once
    report = tmp_path / "report"
    assert (
        cli("eval", "--index", tmp_path / "dup", "--data", doubled, "--split", "all", "--report", report).exit_code == 0
    )
    doubled_metrics = json.loads((report / "metrics.json").read_text())
    for key in ("queries", "map@5", "gap", "known_accuracy", "recall@1"):
        assert doubled_metrics[key] == pytest.approx(clean[key]), key

    # queries that are byte-identical copies (other names) of gallery images are matched leave-one-out
    copies = read_dataset(doubled)
    copies = copies[copies["image_id"].str.contains("copies/")]
    assert copies.empty  # the reader already kept one of each; so evaluate the copies directly
    table = pd.read_csv(doubled / "labels.csv", dtype=str, keep_default_na=False)
    raw = table[table["image"].str.contains("copies/")]
    raw_queries = pd.DataFrame(
        {"image_id": raw["image"], "path": raw["image"], "label": raw["label"], "split": "test"}
    ).reset_index(drop=True)
    copied = evaluate(Recognizer.open(tmp_path / "clean", progress=False), raw_queries).metrics
    for key in ("map@5", "gap", "known_accuracy", "recall@1"):
        assert copied[key] == pytest.approx(clean[key]), key


ROUND_TRIP_LABELS = ['Notre-Dame,"Paris"', "Säntis", "Дом_на_холме", "whale#1;x", "a'b"]


def test_labels_round_trip_through_both_kaggle_formats(corpus: Corpus, index_copy: Path, tmp_path: Path) -> None:
    """Item 5: commas, quotes and any script survive whale and landmark submissions, read back by
    Kenning's own scorer as the labels the JSON answer gives."""
    queries = tmp_path / "queries"
    queries.mkdir()
    for label, photo in zip(ROUND_TRIP_LABELS, [*corpus.good, corpus.good[0]], strict=False):
        run = cli("enroll", photo, "--index", index_copy, "--label", label)
        assert run.exit_code == 0 or "already in index" in run.stderr, run.stderr
    for i, photo in enumerate(corpus.good):
        shutil.copy(photo, queries / f"q{i}{photo.suffix}")
    answers = json.loads(cli("query", *sorted(queries.iterdir()), "--index", index_copy, "--json").stdout)
    expected = {Path(a["image"]).name: [p["label"] for p in a["predictions"]] for a in answers}
    assert set(ROUND_TRIP_LABELS[:4]) <= {labels[0] for labels in expected.values()}

    whale, landmark = tmp_path / "w.csv", tmp_path / "l.csv"
    assert cli("query", "--index", index_copy, "--batch", queries, "--out", whale).exit_code == 0
    read = read_whale_submission(whale)
    assert {name: ids for name, (_, ids) in read.items()} == expected
    run = cli("query", "--index", index_copy, "--batch", queries, "--format", "landmark", "--out", landmark)
    assert run.exit_code == 0, run.stderr
    for name, (_, prediction) in read_landmark_submission(landmark).items():
        top = expected[next(n for n in expected if Path(n).stem == name)][0]
        assert prediction is None or prediction[0] == top


def test_labels_that_cannot_round_trip_are_refused_by_name(corpus: Corpus, index_copy: Path, tmp_path: Path) -> None:
    """Item 5: "Hut on the ridge" is a fine label (query --json carries it) but a whale or landmark
    submission would split it; the batch is refused before any image is read, naming it."""
    assert cli("enroll", corpus.good[0], "--index", index_copy, "--label", "Hut on the ridge").exit_code == 0
    answer = json.loads(cli("query", corpus.good[0], "--index", index_copy, "--json").stdout)[0]
    assert answer["predictions"][0]["label"] == "Hut on the ridge"
    before = snapshot(tmp_path)
    for fmt in ("whale", "landmark"):
        run = cli("query", "--index", index_copy, "--batch", corpus.root, "--format", fmt, "--out", tmp_path / "s.csv")
        assert_refused(run, "'Hut on the ridge'", f"cannot round-trip through a {fmt} submission")
    assert snapshot(tmp_path) == before  # nothing written


def test_dataset_labels_with_control_characters_are_refused_with_their_row(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text('image,label\na.jpg,fine\nb.jpg,"two\nlines"\n')
    with pytest.raises(Exception, match=r"row 2: label 'two\\nlines' contains the control character U\+000A"):
        read_dataset(tmp_path)
