"""The CLI end to end, as a user runs it: real model, real index, real files; in-process (the
entry point `python cli.py` once, in a real process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.hostile.conftest import cli

ROOT = Path(__file__).resolve().parent.parent


def kenning(*args: str | Path) -> subprocess.CompletedProcess:
    """The CLI in-process (typer's CliRunner): what `python cli.py ARGS` prints and returns, without
    an interpreter's start-up per command (about 6 s with torch); `real_kenning` for the entry point."""
    run = cli(*args)
    return subprocess.CompletedProcess([str(a) for a in args], run.exit_code, run.stdout, run.stderr)


def real_kenning(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True, text=True, timeout=600
    )


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture()
def index_copy(built_index: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(built_index, copy)
    return copy


def test_train_build_query_enroll_eval(demo_dir: Path, tmp_path: Path) -> None:
    model, index, report = tmp_path / "model", tmp_path / "index", tmp_path / "report"
    done = kenning(
        "train-embed",
        "--data",
        demo_dir,
        "--out",
        model,
        "--epochs",
        "1",
        "--image-size",
        "64",
        "--embedding-dim",
        "32",
        "--set",
        "train.classes_per_batch=4",
        "--set",
        "train.images_per_class=2",
    )
    assert done.returncode == 0, done.stderr
    assert "trained on" in done.stdout and (model / "model.pt").is_file()

    done = kenning("build-index", "--model", model, "--data", demo_dir, "--split", "test", "--out", index)
    assert done.returncode == 0, done.stderr
    assert "unknown threshold" in done.stdout  # calibrated on the held-out identities

    gallery_image = next((demo_dir / "images" / "test").glob("landmark_*/0.jpg"))
    done = kenning("query", gallery_image, "--index", index, "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)[0]
    assert answer["predictions"][0]["label"] == gallery_image.parent.name  # it is in the gallery itself
    assert len(answer["predictions"]) == 5
    confidences = [p["confidence"] for p in answer["predictions"] if p["label"] != "unknown"]
    assert all(0 <= c <= 1 for c in confidences)
    unknowns = [p for p in answer["predictions"] if p["label"] == "unknown"]
    assert all(p["confidence"] is None for p in unknowns)  # placed by the threshold, not voted

    photo = demo_dir / "enroll" / "new_landmark_0.jpg"
    done = kenning("enroll", photo, "--index", index, "--label", "brand_new")
    assert done.returncode == 0, done.stderr
    done = kenning("query", photo, "--index", index, "--json")
    answer = json.loads(done.stdout)[0]
    assert answer["predictions"][0]["label"] == "brand_new"
    assert answer["best_similarity"] == pytest.approx(1.0, abs=1e-3)

    done = kenning("eval", "--index", index, "--data", demo_dir, "--report", report)
    assert done.returncode == 0, done.stderr
    assert (report / "report.html").is_file() and (report / "retrieval_grid.png").is_file()
    metrics = json.loads((report / "metrics.json").read_text())
    assert {"recall@1", "map@5", "gap", "known_accuracy", "unknown_accuracy"} <= set(metrics)
    assert metrics["unknown_queries"] > 0  # distractors and single-view landmarks are new


def test_query_text_output(index_copy: Path, demo_dir: Path) -> None:
    image = next((demo_dir / "images" / "test").glob("landmark_*/1.jpg"))
    done = kenning("query", image, "--index", index_copy)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert str(image) in lines[0] and lines[1].lstrip().startswith("1. ")


@pytest.mark.parametrize("case", ["missing", "not_image", "truncated"])
def test_bad_query_image_is_one_line_exit_2(case: str, index_copy: Path, demo_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / f"{case}.jpg"
    if case == "not_image":
        path.write_text("plain text")
    elif case == "truncated":
        shutil.copy(next((demo_dir / "images").glob("*/*/0.jpg")), path)
        path.write_bytes(path.read_bytes()[:-400])
    before = _snapshot(index_copy)
    done = kenning("query", path, "--index", index_copy)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error:")
    assert _snapshot(index_copy) == before


def test_enroll_of_unreadable_photo_changes_nothing(index_copy: Path, tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_text("nope")
    before = _snapshot(index_copy)
    done = kenning("enroll", tmp_path / "x.jpg", "--index", index_copy, "--label", "n")
    assert done.returncode == 2 and "nothing was enrolled" in done.stderr
    assert _snapshot(index_copy) == before


def test_csv_without_columns_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("file,class\na.jpg,x\n")
    done = kenning("train-embed", "--data", tmp_path, "--out", tmp_path / "m")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {tmp_path / 'labels.csv'} lacks column(s) image, label: expected image, label, found file, class"
    )
    assert not (tmp_path / "m").exists()


def test_query_with_another_model_is_refused(index_copy: Path, demo_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    done = kenning(
        "train-embed",
        "--data",
        demo_dir,
        "--out",
        other,
        "--epochs",
        "0",
        "--embedding-dim",
        "64",
        "--image-size",
        "64",
    )
    assert done.returncode == 0, done.stderr
    before = _snapshot(index_copy)
    image = next((demo_dir / "images" / "test").glob("landmark_*/0.jpg"))
    done = kenning("query", image, "--index", index_copy, "--model", other)
    assert done.returncode == 2
    assert "index was built with model" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert _snapshot(index_copy) == before


def test_entry_point_and_usage_errors() -> None:
    done = real_kenning("--help")
    assert done.returncode == 0 and "train-embed" in done.stdout and "merge" in done.stdout
    done = real_kenning("query")
    assert done.returncode == 2


def test_catalogue_with_annoy_enroll_forget_compact_batch(trained_model: Path, demo_dir: Path, tmp_path: Path) -> None:
    index = tmp_path / "annoy-index"
    done = kenning(
        "build-index", "--model", trained_model, "--data", demo_dir, "--split", "test", "--out", index,
        "--backend", "annoy", "--index-type", "trees=10", "--search-params", "search_k=100000", "--k", "5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "annoy trees=10, search_k=100000" in done.stdout and any(index.glob("base-*.ann"))

    photo = demo_dir / "enroll" / "new_landmark_0.jpg"
    done = kenning("enroll", photo, "--index", index, "--label", "brand_new")
    assert done.returncode == 0, done.stderr

    def top(image: Path) -> str:
        done = kenning("query", image, "--index", index, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)[0]["predictions"][0]["label"]

    assert top(photo) == "brand_new"  # answered from the side index, the trees untouched
    gallery_image = next((demo_dir / "images" / "test").glob("landmark_*/0.jpg"))
    owner = gallery_image.parent.name
    assert top(gallery_image) == owner

    done = kenning("forget", "--index", index, "--label", owner)
    assert done.returncode == 0 and "removed" in done.stdout, done.stderr
    assert top(gallery_image) != owner
    done = kenning("forget", "--index", index, "--label", owner)
    assert done.returncode == 2 and "nothing was forgotten" in done.stderr

    done = kenning("build-index", "--compact", "--out", index)
    assert done.returncode == 0 and "compacted" in done.stdout, done.stderr
    assert top(photo) == "brand_new" and top(gallery_image) != owner

    queries = demo_dir / "enroll"
    done = kenning("query", "--index", index, "--batch", queries, "--format", "whale", "--out", tmp_path / "w.csv")
    assert done.returncode == 0, done.stderr
    whale = (tmp_path / "w.csv").read_text().splitlines()
    assert whale[0] == "Image,Id" and len(whale) == 1 + len(list(queries.glob("*.jpg")))
    assert whale[1].split(",")[0] == "new_landmark_0.jpg" and len(whale[1].split(",")[1].split()) == 5
    assert whale[1].split(",")[1].split()[0] == "brand_new"
    done = kenning("query", "--index", index, "--batch", queries, "--format", "landmark", "--out", tmp_path / "l.csv")
    assert done.returncode == 0, done.stderr
    landmark = (tmp_path / "l.csv").read_text().splitlines()
    assert landmark[0] == "id,landmarks" and landmark[1].startswith("new_landmark_0,brand_new 0.")

    # the submissions scored offline: every enrol/ photo is of brand_new
    names = sorted(p.name for p in queries.glob("*.jpg"))
    (tmp_path / "wt.csv").write_text("Image,Id\n" + "".join(f"{n},brand_new\n" for n in names))
    (tmp_path / "lt.csv").write_text("id,landmark_id\n" + "".join(f"{Path(n).stem},brand_new\n" for n in names))
    answers = [row.split(",")[1].split() for row in whale[1:]]
    expected = sum(1 / (a.index("brand_new") + 1) if "brand_new" in a else 0 for a in answers) / len(answers)
    done = kenning("eval", "--submission", tmp_path / "w.csv", "--solution", tmp_path / "wt.csv", "--format", "whale")
    assert done.returncode == 0, done.stderr
    assert f"map@5             {expected:.5f}" in done.stdout
    done = kenning(
        "eval", "--submission", tmp_path / "l.csv", "--solution", tmp_path / "lt.csv", "--format", "landmark"
    )
    assert done.returncode == 0 and "gap" in done.stdout, done.stderr
    done = kenning(
        "eval", "--submission", tmp_path / "l.csv", "--solution", tmp_path / "wt.csv", "--format", "landmark"
    )
    assert done.returncode == 2 and "wt.csv:1: header 'Image,Id' lacks column 'id'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_eval_protocol_catalogue_report(trained_model: Path, demo_dir: Path, tmp_path: Path) -> None:
    done = kenning(
        "eval", "--protocol", "catalogue", "--model", trained_model, "--data", demo_dir, "--split", "test",
        "--calibrate", "gap", "--report", tmp_path / "report", "--index-out", tmp_path / "index",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["calibration"]["objective"] == "gap" and metrics["calibrated_for"] == "gap"
    assert metrics["unknown_queries"] > 0 and "auroc_known_vs_unknown" in metrics
    assert "calibrated for gap" in (tmp_path / "report" / "report.html").read_text()
    done = kenning("eval", "--protocol", "catalogue", "--data", demo_dir)
    assert done.returncode == 2 and "--protocol needs --model" in done.stderr
    done = kenning("eval", "--protocol", "bogus", "--model", trained_model, "--data", demo_dir)
    assert done.returncode == 2 and "unknown protocol 'bogus'" in done.stderr
    done = kenning("eval", "--submission", tmp_path / "x.csv", "--format", "whale")
    assert done.returncode == 2 and "needs --submission, --solution and --format" in done.stderr


def test_query_lists_candidates_with_their_decision(index_copy: Path, demo_dir: Path) -> None:
    image = next((demo_dir / "images" / "test").glob("landmark_*/1.jpg"))
    done = kenning("query", image, "--index", index_copy, "--json", "--candidates", "8", "--k", "30")
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)
    assert len(record["predictions"]) == 8  # the k-NN rule ranks the labels of its k voters: --k 30
    assert record["decision"] in ("match", "review", "new")
    if record["decision"] != "review":  # outside the band the threshold's answer is the decision
        assert record["unknown"] == (record["decision"] == "new")


def test_eval_with_a_new_rate_answers_that_share_unknown(index_copy: Path, demo_dir: Path, tmp_path: Path) -> None:
    done = kenning(
        "eval", "--index", index_copy, "--data", demo_dir, "--split", "test", "--set", "index.new_rate=0.5",
        "--report", tmp_path / "report",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    table = pd.read_csv(tmp_path / "report" / "predictions.csv", keep_default_na=False)
    unknown = table.loc[~table["known"], "actual"].iloc[0]
    share = (table["predicted"].str.split().str[0] == unknown).mean()
    assert metrics["calibrated_for"] == "new rate" and abs(share - 0.5) <= 0.1
    assert {"baks", "baus", "balanced"} <= set(metrics)
