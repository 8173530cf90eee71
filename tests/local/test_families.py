"""Local-feature families by name: a second family (tests/local/patch_family.py) is one module and
one registry line, and goes through build, query, enrol and reload with its own descriptor layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kenning.errors import KenningError
from kenning.index.gallery import GalleryIndex
from kenning.local import registry
from kenning.local.extractor import create_extractor, matcher_class
from kenning.local.featureset import FeatureSet, Layout
from kenning.local.lnbnn import LnbnnMatcher
from tests.conftest import build_local_index
from tests.hostile.conftest import assert_refused, cli


@pytest.fixture
def patches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.EXTRACTORS, "patches", "tests.local.patch_family")  # the one registry line


def test_families_and_matchers_are_built_by_name() -> None:
    sift = create_extractor("sift")
    assert sift.layout == Layout(128, "uint8") and matcher_class(sift.matcher) is LnbnnMatcher
    with pytest.raises(KenningError, match="local features 'orb' is not one of sift, aliked, disk, xfeat, sift\\+disk"):
        create_extractor("orb")


def test_an_unregistered_family_is_refused_when_the_config_is_read(local_model: Path, local_demo: Path) -> None:
    run = cli("build-index", "--model", local_model, "--data", local_demo, "--out", "x", "--local", "patches")
    families = "sift, aliked, disk, xfeat, sift+disk"
    assert_refused(run, f"config key 'local.method' must be one of {families}, none, got 'patches'")


def test_a_second_family_builds_queries_and_enrols_with_its_own_layout(
    patches: None, local_model: Path, local_demo: Path, tmp_path: Path
) -> None:
    index_dir = tmp_path / "index"
    build_local_index(local_model, local_demo, index_dir, "patches")
    index = GalleryIndex.load(index_dir)
    stored = index.live_local()
    assert stored.descriptors.dtype == np.float16 and stored.descriptors.shape[1] == 16
    assert set(index.manifest.fusion["calibrators"]) == {"global", "local"}  # calibrated like SIFT's

    photos = sorted((local_demo / "enroll").glob("*.jpg"))
    query = cli("query", "--index", index_dir, "--json", photos[0])
    assert query.exit_code == 0, query.stderr
    assert json.loads(query.stdout)[0]["score"] == "fused probability"
    enrolled = cli("enroll", "--index", index_dir, "--label", "newcomer", *photos[:2])
    assert enrolled.exit_code == 0, enrolled.stderr
    again = cli("query", "--index", index_dir, "--json", photos[0])
    assert json.loads(again.stdout)[0]["predictions"][0]["label"] == "newcomer"
    delta = GalleryIndex.load(index_dir).delta.local
    assert delta is not None and delta.descriptors.dtype == np.float16 and len(delta) == 2


def test_feature_sets_of_another_layout_are_refused(
    patches: None, local_model: Path, local_demo: Path, tmp_path: Path
) -> None:
    """SIFT's uint8 features are never read (or cast) as another family's."""
    sift_dir = tmp_path / "sift"
    build_local_index(local_model, local_demo, sift_dir, "sift")
    manifest = GalleryIndex.load(sift_dir).manifest
    with pytest.raises(KenningError, match="array shapes do not agree"):
        FeatureSet.load(sift_dir / manifest.local_base_file, Layout(16, "float16"))
    features = GalleryIndex.load(sift_dir).live_local()
    with pytest.raises(KenningError, match="not 16 float16"):
        FeatureSet.of([0], [features.image(0)], Layout(16, "float16"))
    moved = tmp_path / "moved"
    shutil.copytree(sift_dir, moved)
    text = (moved / "manifest.json").read_text().replace('"method": "sift"', '"method": "patches"')
    (moved / "manifest.json").write_text(text)
    assert_refused(cli("query", "--index", moved, sorted((local_demo / "enroll").glob("*.jpg"))[0]), "damaged")


def test_a_learned_family_with_its_matcher_builds_queries_and_enrols(
    local_model: Path, local_demo: Path, tmp_path: Path
) -> None:
    """XFeat (the fastest learned family) with LighterGlue on the shortlist: a calibrated part of
    its own, shown per answer; enrolment extracts the same features; a manifest that no longer
    says the matcher was used is refused."""
    index_dir = tmp_path / "xfeat"
    build_local_index(local_model, local_demo, index_dir, "xfeat", "--set", "local.glue=3")
    index = GalleryIndex.load(index_dir)
    assert index.live_local().descriptors.dtype == np.float16 and index.live_local().descriptors.shape[1] == 64
    assert set(index.manifest.fusion["calibrators"]) == {"global", "local", "matches"}
    gallery_photo = sorted((local_demo / "images" / "test").glob("landmark_*/*.jpg"))[0]
    answer = json.loads(cli("query", "--index", index_dir, "--json", gallery_photo).stdout)[0]
    parts = [p["scores"] for p in answer["predictions"] if "scores" in p]
    assert all(set(s) == {"global", "local", "matches", "probability"} for s in parts)
    assert parts[0]["matches"] > 2 * max(s["matches"] for s in parts[1:])  # itself: far more confident matches
    assert set(answer["seconds"]) == {"read", "search", "lnbnn", "glue", "decide"}
    photos = sorted((local_demo / "enroll").glob("*.jpg"))
    assert cli("enroll", "--index", index_dir, "--label", "newcomer", *photos[:2]).exit_code == 0
    again = json.loads(cli("query", "--index", index_dir, "--json", photos[0]).stdout)[0]
    assert again["predictions"][0]["label"] == "newcomer" and again["predictions"][0]["scores"]["matches"] > 0
    manifest = json.loads((index_dir / "manifest.json").read_text())
    manifest["local"]["glue"] = 0
    (index_dir / "manifest.json").write_text(json.dumps(manifest))
    assert_refused(cli("query", "--index", index_dir, photos[0]), "local.glue")


def test_a_family_without_a_learned_matcher_is_refused_before_any_image_is_read(
    local_model: Path, local_demo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "index"
    run = cli(
        "build-index", "--model", local_model, "--data", local_demo, "--out", out,
        "--local", "sift", "--set", "local.glue=3",
    )  # fmt: skip
    assert_refused(run, "local.glue needs a family with a learned matcher (aliked, disk, xfeat); sift has none")
    assert not out.exists() or not any(out.iterdir())
