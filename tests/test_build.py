"""build.py: a gallery (images or stored vectors) -> an index whose answer rules are calibrated on
the model's held-out identities."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from kenning.build import build_from, build_index
from kenning.config import Config
from kenning.data.readers import read_dataset, select_split
from kenning.errors import KenningError
from kenning.index.gallery import GalleryIndex
from kenning.recognizer import Recognizer
from tests.conftest import small_config


def test_gallery_holding_the_held_out_identities_does_not_calibrate_on_them(
    trained_model: Path, demo_dir: Path, tmp_path: Path
) -> None:
    everything = select_split(read_dataset(demo_dir), "all")  # train split, held-out identities included
    index, calibration = build_index(trained_model, everything, small_config().index, tmp_path, progress=False)
    assert calibration is None and index.manifest.threshold is None  # nothing new left to calibrate on


def test_build_skips_unreadable_gallery_images_with_a_warning(
    trained_model: Path, demo_dir: Path, tmp_path: Path, capsys
) -> None:
    gallery = select_split(read_dataset(demo_dir), "test").copy()
    labelled = gallery.index[gallery["label"] != ""]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Path(gallery.loc[labelled[0], "path"]).read_bytes()[:300])  # truncated JPEG
    gallery.loc[labelled[0], "path"] = str(broken)
    index, _ = build_index(trained_model, gallery, small_config().index, tmp_path / "index")
    assert len(index) == len(labelled) - 1
    err = capsys.readouterr().err
    assert err.count("warning: skipped") == 1 and "broken.jpg" in err
    assert "1 of " in err and "could not be read and were skipped" in err


def test_the_stored_rule_is_the_calibration_build_returns(built_index: Path) -> None:
    """What calibration chose is what the manifest keeps and what a recognizer answers with."""
    votes = GalleryIndex.load(built_index).manifest.votes()
    assert votes.calibration is not None and votes.threshold == votes.calibration.threshold
    assert votes.calibration.curve and votes.calibration.objective == "map@5"
    assert votes.k == small_config().index.k
    assert Recognizer.open(built_index, progress=False).rule == votes  # the path queries take by default


def test_a_given_threshold_is_stored_as_given(trained_model: Path, demo_dir: Path, tmp_path: Path) -> None:
    cfg = small_config()
    cfg.index.threshold = 0.25
    index, calibration = build_from(tmp_path, cfg, trained_model, demo_dir, split="test")
    votes = index.manifest.votes()
    assert calibration is None and votes.threshold == 0.25 and votes.calibration is None
    assert GalleryIndex.load(tmp_path).manifest.votes() == votes


@pytest.mark.parametrize(
    ("model", "data", "embeddings", "message"),
    [
        ("m", "d", "e", "drop --model and --data"),
        ("m", None, None, "needs --model and --data, or --embeddings"),
        (None, None, None, "needs --model and --data, or --embeddings"),
    ],
)
def test_build_from_refuses_what_cannot_be_built(
    tmp_path: Path, model: str | None, data: str | None, embeddings: str | None, message: str
) -> None:
    with pytest.raises(KenningError, match=message):
        build_from(tmp_path / "out", Config(), model, data, embeddings)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_local_features_need_the_images(tmp_path: Path) -> None:
    cfg = Config()
    cfg.local.method = "sift"
    with pytest.raises(KenningError, match="local features need the images"):
        build_from(tmp_path / "out", cfg, embeddings=tmp_path / "vectors")


def test_a_cohort_normalised_index_calibrates_loads_and_answers(
    trained_model: Path, demo_dir: Path, tmp_path: Path
) -> None:
    """Normalised scores are not similarities: the threshold may lie outside [-1, 1], and the saved
    index must still load; the same photos rank alike raw and normalised."""
    test = select_split(read_dataset(demo_dir), "test")
    cfg = dataclasses.replace(small_config().index, normalise="cohort", calibrate="balanced", resamples=5)
    index, calibration = build_index(trained_model, test, cfg, tmp_path / "cohort", progress=False)
    assert calibration is not None and calibration.objective == "balanced" and len(calibration.spread.thresholds) > 0
    assert index.manifest.normalise == {"method": "cohort", "skip": 1, "size": 20}
    normalised = Recognizer.open(tmp_path / "cohort", progress=False)
    assert normalised.rule.score == "normalised similarity" and normalised.threshold == calibration.threshold
    raw = Recognizer.open(tmp_path / "cohort", progress=False)
    raw.votes = dataclasses.replace(raw.votes, norm=None)
    photos = test["path"].tolist()[:6]
    for a, b in zip(normalised.query(photos), raw.query(photos, None), strict=True):
        assert a.decision in ("match", "review", "new")
        assert [x for x in a.labels if x != "unknown"] == [x for x in b.labels if x != "unknown"]


def test_a_bagged_threshold_is_stored_and_used(trained_model: Path, demo_dir: Path, tmp_path: Path) -> None:
    """index.threshold_choice bagged: the threshold the index answers with is the median of the
    bootstrap draws' choices, stored with them."""
    test = select_split(read_dataset(demo_dir), "test")
    cfg = dataclasses.replace(small_config().index, calibrate="balanced", resamples=7, threshold_choice="bagged")
    _, calibration = build_index(trained_model, test, cfg, tmp_path / "bagged", progress=False)
    assert calibration is not None and len(calibration.spread.thresholds) > 0
    assert calibration.threshold == pytest.approx(float(np.median(calibration.spread.thresholds)))
    opened = Recognizer.open(tmp_path / "bagged", progress=False)
    assert opened.threshold == pytest.approx(calibration.threshold)
    assert opened.calibration.spread == calibration.spread and opened.calibration.bagged
