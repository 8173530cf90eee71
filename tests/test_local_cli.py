"""Local matching through the commands a user runs (in-process): build-index --local sift, query
(--json score parts, --no-local), enrol / forget / compact, eval with its report, and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kenning.index.gallery import GalleryIndex
from kenning.recognizer import Recognizer
from tests.conftest import LOCAL_SMALL, build_local_index, untrained_model
from tests.hostile.conftest import assert_refused, cli


@pytest.fixture(scope="module")
def indexes(local_model: Path, local_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    plain, local = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("local")
    build_local_index(local_model, local_demo, plain, "none")
    build_local_index(local_model, local_demo, local, "sift")
    return plain, local


def _queries(local_demo: Path) -> list[Path]:
    return (
        sorted((local_demo / "images" / "test").glob("landmark_*/*.jpg"))[:6]
        + sorted((local_demo / "enroll").glob("*.jpg"))[:2]
    )


def _answers(run) -> list[dict]:
    assert run.exit_code == 0, run.stderr
    return json.loads(run.stdout)


def test_local_index_stores_features_and_fusion(indexes: tuple[Path, Path]) -> None:
    _, local = indexes
    index = GalleryIndex.load(local)
    m = index.manifest
    assert m.local["method"] == "sift" and (local / m.local_base_file).is_file()
    assert sorted(index.live_local().ids) == sorted(index.table["id"])
    assert set(m.fusion["calibrators"]) == {"global", "local"} and m.fusion["fitted_on"]["positives"] >= 5
    assert 0.0 <= m.fusion["threshold"] <= 1.0  # the fused path's threshold is a probability


def test_query_json_gives_score_parts_and_no_local_is_the_embedding_alone(
    indexes: tuple[Path, Path], local_demo: Path
) -> None:
    plain, local = indexes
    images = _queries(local_demo)
    fused = _answers(cli("query", *images, "--index", local, "--json"))
    for answer in fused:
        assert answer["score"] == "fused probability"
        named = [p for p in answer["predictions"] if p["confidence"] is not None]
        assert named and all(set(p["scores"]) == {"global", "local", "probability"} for p in named)
        assert all(0 <= p["scores"]["probability"] <= 1 for p in named)
    assert all(set(a["seconds"]) == {"read", "search", "lnbnn", "decide"} for a in fused)  # what each stage cost
    alone = _answers(cli("query", *images, "--index", local, "--json", "--no-local"))
    embedding = _answers(cli("query", *images, "--index", plain, "--json"))
    assert all(set(a.pop("seconds")) == {"read", "search", "decide"} for a in alone + embedding)
    assert alone == embedding  # the embedding-only path is unchanged by the local stage beside it


def test_eval_no_local_matches_an_index_without_local_features(indexes: tuple[Path, Path], local_demo: Path) -> None:
    plain, local = indexes
    alone = cli("eval", "--index", local, "--data", local_demo, "--no-local")
    embedding = cli("eval", "--index", plain, "--data", local_demo)
    assert alone.exit_code == embedding.exit_code == 0
    assert alone.stdout == embedding.stdout


def test_eval_report_draws_reliability_and_matched_keypoints(
    indexes: tuple[Path, Path], local_demo: Path, tmp_path: Path
) -> None:
    _, local = indexes
    run = cli("eval", "--index", local, "--data", local_demo, "--report", tmp_path / "report")
    assert run.exit_code == 0, run.stderr
    assert "ranked_by               fused" in run.stdout
    for name in ("reliability.png", "local_matches.png", "foregrounds.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert name in (tmp_path / "report" / "report.html").read_text()


def test_enrolled_identity_is_matched_locally_then_forgotten_and_compacted(
    indexes: tuple[Path, Path], local_demo: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    shutil.copytree(indexes[1], index)
    photos = sorted((local_demo / "enroll").glob("*.jpg"))
    assert cli("enroll", photos[0], "--index", index, "--label", "newcomer").exit_code == 0
    loaded = GalleryIndex.load(index)
    assert sorted(loaded.live_local().ids) == sorted(loaded.table["id"])
    itself = _answers(cli("query", photos[0], "--index", index, "--json"))[0]
    assert itself["predictions"][0]["label"] == "newcomer"  # its own photo: every keypoint matches
    assert cli("forget", "--index", index, "--label", "newcomer").exit_code == 0
    assert cli("build-index", "--out", index, "--compact").exit_code == 0
    compacted = GalleryIndex.load(index)
    assert "newcomer" not in set(compacted.table["label"])
    assert sorted(compacted.live_local().ids) == sorted(compacted.table["id"])


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_a_damaged_local_feature_file_is_refused_in_one_line(
    indexes: tuple[Path, Path], local_demo: Path, tmp_path: Path, damage: str
) -> None:
    index = tmp_path / "index"
    shutil.copytree(indexes[1], index)
    victim = index / GalleryIndex.load(index).manifest.local_delta_file
    if damage == "garbage":
        victim.write_bytes(b"PK\x03\x04 not really")
    else:
        victim.unlink()
    before = {p.name: p.read_bytes() for p in index.iterdir()}
    for args in (
        ["query", _queries(local_demo)[0], "--index", index],
        ["enroll", _queries(local_demo)[0], "--index", index, "--label", "x"],
    ):
        assert_refused(cli(*args), str(index))
    assert {p.name: p.read_bytes() for p in index.iterdir()} == before


def test_a_closed_set_catalogue_calibrates_its_fusion_on_the_gallery_itself(local_demo: Path, tmp_path: Path) -> None:
    """A model trained on every identity it indexes (no held-out ones): the fusion is fitted on
    leave-one-out queries of the gallery, said so, and no unknown threshold is made up."""
    model = untrained_model(local_demo, tmp_path / "model", holdout_fraction=0)
    out = tmp_path / "index"
    run = cli("build-index", "--model", model, "--data", local_demo, "--out", out, "--local", "sift", *LOCAL_SMALL)
    assert run.exit_code == 0, run.stderr
    assert "calibrated on the gallery itself (leave-one-out)" in run.stderr
    manifest = GalleryIndex.load(out).manifest
    assert manifest.fusion["fitted_on"]["on"].startswith("the gallery itself") and manifest.fusion["threshold"] is None
    assert manifest.fusion["fitted_on"]["positives"] >= 5
    photo = sorted((local_demo / "images" / "train").glob("landmark_*/*.jpg"))[0]
    answer = _answers(cli("query", photo, "--index", out, "--json"))[0]
    assert answer["predictions"][0]["label"] == photo.parent.name and not answer["unknown"]
    assert set(answer["predictions"][0]["scores"]) == {"global", "local", "probability"}


def test_a_gallery_with_one_photo_per_identity_and_no_held_out_ones_is_refused(
    local_demo: Path, tmp_path: Path
) -> None:
    model = untrained_model(local_demo, tmp_path / "model", holdout_fraction=0)
    single = tmp_path / "single"
    for folder in sorted((local_demo / "images" / "train").glob("landmark_*")):
        (single / folder.name).mkdir(parents=True)
        shutil.copy(sorted(folder.glob("*.jpg"))[0], single / folder.name / "only.jpg")
    run = cli("build-index", "--model", model, "--data", single, "--out", tmp_path / "index", "--local", "sift")
    assert_refused(run, "local matching needs held-out identities outside the gallery")
    assert not (tmp_path / "index").exists() or not any((tmp_path / "index").iterdir())


def test_spatial_verification_is_a_calibrated_score_part(local_model: Path, local_demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "verified"
    build_local_index(local_model, local_demo, out, "sift", "--set", "local.verify=3")
    assert set(GalleryIndex.load(out).manifest.fusion["calibrators"]) == {"global", "local", "inliers"}
    photo = _queries(local_demo)[0]  # a gallery photo: it agrees with itself geometrically
    answer = _answers(cli("query", photo, "--index", out, "--json"))[0]
    parts = [p["scores"] for p in answer["predictions"] if "scores" in p]
    assert all(set(s) == {"global", "local", "inliers", "probability"} for s in parts)
    assert parts[0]["inliers"] >= 8 and parts[0]["inliers"] > max(s["inliers"] for s in parts[1:])
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["local"]["verify"] = 0  # a manifest claiming no verification for a fusion fitted with it
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert_refused(cli("query", photo, "--index", out), "local.verify")


def test_spatial_rescoring_is_stored_and_scores_only_the_best_images_checked(
    indexes: tuple[Path, Path], local_model: Path, local_demo: Path, tmp_path: Path
) -> None:
    """Name scoring on top: an identity sums only the votes its checked images kept. Whitened
    descriptors (local.whiten) are stored as a setting and searched by the index's matcher."""
    out = tmp_path / "rescored"
    settings = ["--set", "local.spatial=2", "--set", "local.identity_score=nsum", "--set", "local.whiten=true"]
    build_local_index(local_model, local_demo, out, "sift", *settings)
    stored = GalleryIndex.load(out).manifest.local
    assert stored["spatial"] == 2 and stored["identity_score"] == "nsum" and stored["whiten"] is True
    assert Recognizer.open(out, progress=False).matcher.whitening.blocks  # fitted on the gallery's descriptors
    photos = _queries(local_demo)[:3]  # gallery photos: each agrees with itself geometrically
    for plain, checked in zip(
        _answers(cli("query", *photos, "--index", indexes[1], "--json")),
        _answers(cli("query", *photos, "--index", out, "--json")),
        strict=True,
    ):
        scored = [p for p in checked["predictions"] if p.get("scores", {}).get("local", 0) > 0]
        assert 1 <= len(scored) <= 2  # identities of the 2 images re-scored, no other
        assert checked["predictions"][0]["label"] == plain["predictions"][0]["label"]
        assert len([p for p in plain["predictions"] if p.get("scores", {}).get("local", 0) > 0]) > 2
