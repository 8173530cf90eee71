"""evaluate, the protocols and the report on a real (tiny) model and index."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kenning.data.readers import read_dataset, select_split
from kenning.data.splits import catalogue_split, sighting_key
from kenning.eval.evaluate import evaluate
from kenning.eval.protocols import run_protocol
from kenning.eval.report import write_report
from kenning.index.gallery import GalleryIndex
from kenning.recognizer import Recognizer
from kenning.training.validation import leave_one_out
from tests.conftest import small_config


def test_open_set_figures_agree_with_the_per_query_table(built_index: Path, demo_dir: Path) -> None:
    result = evaluate(Recognizer.open(built_index, progress=False), select_split(read_dataset(demo_dir), "test"))
    m, q = result.metrics, result.per_query
    assert m["unknown_queries"] > 0 and m["known_queries"] > 0
    assert m["map@5"] == pytest.approx(q["ap@5"].mean())
    assert m["known_accuracy"] == pytest.approx(q.loc[q["known"], "correct"].mean())
    assert m["unknown_accuracy"] == pytest.approx(q.loc[~q["known"], "correct"].mean())
    unknown_best = q.loc[~q["known"], "best_similarity"]
    assert m["false_accept_rate"] == pytest.approx((unknown_best >= m["threshold"]).mean())
    assert 0.0 <= m["auroc_known_vs_unknown"] <= 1.0
    assert m["calibrated_for"] == "map@5"


def test_reid_matches_pytorch_metric_learning_on_the_same_embeddings(
    trained_model: Path, demo_dir: Path, tmp_path: Path
) -> None:
    test = select_split(read_dataset(demo_dir), "test")
    result = run_protocol("reid", trained_model, test, small_config().index, tmp_path / "index", progress=False)
    m = result.metrics
    assert m["unknown_queries"] == 0 and m["threshold"] is None and m["false_accept_rate"] is None
    # PML's AccuracyCalculator, leave-one-out on the vectors the index holds
    index = GalleryIndex.load(tmp_path / "index")
    reference = leave_one_out(index.vectors_of(index.table["id"].to_numpy()), index.table["label"].tolist(), k=5)
    assert m["queries"] == reference["queries"]
    assert m["precision@1"] == pytest.approx(reference["precision@1"], abs=1e-6)
    assert m["map@r"] == pytest.approx(reference["map@r"], abs=1e-6)
    assert m["recall@1"] == pytest.approx(m["precision@1"])  # the same thing, closed set


def test_catalogue_protocol_enrols_first_sightings(trained_model: Path, demo_dir: Path, tmp_path: Path) -> None:
    test = select_split(read_dataset(demo_dir), "test")
    enrolled, queries = catalogue_split(test)
    cfg = small_config().index
    cfg.calibrate, cfg.target_far = "far", 0.25
    result = run_protocol("catalogue", trained_model, test, cfg, index_dir=tmp_path / "index", progress=False)
    m = result.metrics
    assert m["gallery_size"] == len(enrolled) and m["queries"] == len(queries)
    assert m["known_queries"] == queries["label"].isin(set(enrolled["label"])).sum()
    manifest = GalleryIndex.load(tmp_path / "index").manifest
    assert manifest.calibration["objective"] == "far" and manifest.calibration["far"] <= 0.25
    assert m["threshold"] == manifest.threshold and m["calibrated_for"] == "far"


def test_report_renders(built_index: Path, demo_dir: Path, tmp_path: Path) -> None:
    result = evaluate(Recognizer.open(built_index, progress=False), select_split(read_dataset(demo_dir), "test"))
    page = write_report(result, tmp_path / "report", "test report")
    files = {p.name for p in (tmp_path / "report").iterdir()}
    figures = {"threshold_sweep.png", "similarity_histograms.png", "retrieval_grid.png", "per_identity.png"}
    assert figures | {"metrics.json", "predictions.csv", "report.html"} <= files
    for name in figures:
        with Image.open(tmp_path / "report" / name) as img:
            img.verify()
            assert img.format == "PNG" and min(img.size) >= 300
    with Image.open(tmp_path / "report" / "retrieval_grid.png") as grid:
        rows = min(4, len(result.per_query) // 2)
        assert grid.size[1] >= 2 * rows * 150  # worst and best rows of thumbnails
    html = page.read_text()
    assert html.count("data:image/png;base64,") == len(figures)  # self-contained
    assert "map@5" in html and "gap" in html and "calibrated for map@5" in html
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["calibration"]["objective"] == "map@5" and "curve" not in metrics["calibration"]
    assert metrics["map@5"] == pytest.approx(result.metrics["map@5"])
    assert np.isfinite(metrics["threshold"])


def _sightings(demo_dir: Path, out: Path) -> Path:
    """The demo's test landmarks as sightings: each photo twice, `<n>_leftphoto.jpg` and a re-encoded
    `<n>_rightphoto.jpg` (other bytes, nearly the same pixels: a scene shared by both flanks)."""
    test = select_split(read_dataset(demo_dir), "test")
    test = test[test["label"] != ""]
    rows = []
    for n, (path, label) in enumerate(zip(test["path"], test["label"], strict=True)):
        (out / label).mkdir(parents=True, exist_ok=True)
        with Image.open(path) as img:
            img.convert("RGB").save(out / label / f"{n}_leftphoto.jpg", quality=95)
            img.convert("RGB").save(out / label / f"{n}_rightphoto.jpg", quality=80)
        rows += [(f"{label}/{n}_leftphoto.jpg", label), (f"{label}/{n}_rightphoto.jpg", label)]
    lines = ["image,label,split", *(f"{image},{label},test" for image, label in rows)]
    (out / "labels.csv").write_text("\n".join(lines) + "\n")
    return out


def test_reid_never_matches_the_own_sighting(trained_model: Path, demo_dir: Path, tmp_path: Path) -> None:
    data = select_split(read_dataset(_sightings(demo_dir, tmp_path / "data")), "test")
    cfg = small_config().index
    cfg.viewpoints = "any"  # the two photos of a sighting are named as flanks: here every photo matches every one
    result = run_protocol("reid", trained_model, data, cfg, tmp_path / "index", progress=False)
    partner = {
        p: p.replace("_leftphoto", "_rightphoto") if "_left" in p else p.replace("_rightphoto", "_leftphoto")
        for p in data["path"]
    }
    q = result.per_query
    for path, shown in zip(q["path"], result.neighbour_paths, strict=True):
        assert partner[path] not in set(shown) and path not in set(shown)
    # with the own sighting allowed, the near-copy answers nearly every query: the scene, not the landmark
    allowed = evaluate(Recognizer.open(tmp_path / "index", progress=False), data, closed_set=True)
    assert allowed.metrics["recall@1"] > 0.95 > result.metrics["recall@1"]
    # the same figures as leave-one-out over the stored vectors with sightings as groups
    index = GalleryIndex.load(tmp_path / "index")
    table = index.table
    sightings = [(lab, sighting_key(i)) for lab, i in zip(table["label"], table["image_id"], strict=True)]
    reference = leave_one_out(
        index.vectors_of(index.table["id"].to_numpy()), index.table["label"].tolist(), k=5, groups=sightings
    )
    assert result.metrics["queries"] == reference["queries"]
    for key in ("recall@1", "recall@5", "precision@1", "map@r"):
        assert result.metrics[key] == pytest.approx(reference[key], abs=1e-6), key
    # matched by viewpoint (the default), a "left" photo never finds the "right" one, own sighting or not
    recognizer = Recognizer.open(tmp_path / "index", progress=False)
    recognizer.configure(viewpoints="compatible")
    flank = evaluate(recognizer, data, closed_set=True)
    for path, shown in zip(flank.per_query["path"], flank.neighbour_paths, strict=True):
        side = "_left" if "_left" in path else "_right"
        assert all(side in s for s in shown if s), (path, shown)
