"""Spatial verification on real photographs: a disguised copy agrees with its source on one
similarity transform by many matches, with another photo by almost none; same answer every run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kenning.config import LocalConfig
from kenning.local.features import extract_paths
from kenning.local.featureset import LocalFeatures
from kenning.local.spatial import consistent, inliers
from tests.local.test_lnbnn import PHOTOS, _disguise, photos  # noqa: F401 (photos: the fixture)


def test_a_disguised_copy_has_many_inliers_with_its_source_only(photos: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    cfg = LocalConfig(method="sift", max_keypoints=500)
    gallery = extract_paths([str(photos[n]) for n in PHOTOS], cfg, progress=False).features
    query = extract_paths([str(_disguise(photos["chelsea"], tmp_path / "q.jpg"))], cfg, progress=False).features[0]
    counts = {name: inliers(query, g) for name, g in zip(PHOTOS, gallery, strict=True)}
    others = [c for name, c in counts.items() if name != "chelsea"]
    assert counts["chelsea"] >= 30 and counts["chelsea"] > 5 * max(others), counts
    assert inliers(query, gallery[PHOTOS.index("chelsea")]) == counts["chelsea"]  # RANSAC seeded
    nothing = LocalFeatures(
        np.zeros((0, 4), np.float32), np.zeros((0, 128), np.uint8), np.zeros(0, np.float32),
        np.zeros((12, 12), np.float16), (10, 10),
    )  # fmt: skip
    assert inliers(query, nothing) == 0 and inliers(nothing, query) == 0


def test_consistent_finds_the_correspondences_of_one_similarity_transform() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 500, (60, 2))
    angle, scale = np.deg2rad(20), 0.8
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rotation.T + [40, -10]
    dst[40:] = rng.uniform(0, 500, (20, 2))  # a third of them chance
    inlier = consistent(src, dst, side=500)
    assert inlier[:40].all() and inlier[40:].sum() <= 2
    assert not consistent(src[:2], dst[:2], side=500).any()  # too few to be evidence


def test_the_tolerance_is_a_share_of_the_gallery_image_side() -> None:
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 500, (60, 2))
    dst = src + np.array([25.0, 5.0])
    bent = np.arange(0, 60, 3)  # a body bends: every third match lands 18 px (of a 512 px side) off
    dst[bent] += rng.choice([-1, 1], (len(bent), 2)) * 18 / np.sqrt(2)
    strict, loose = consistent(src, dst, side=512, tolerance=12), consistent(src, dst, side=512, tolerance=30)
    assert strict.sum() == 60 - len(bent) and not strict[bent].any()
    assert loose.sum() > strict.sum() and loose[bent].sum() >= 0.8 * len(bent)
    bigger = consistent(src * 2, dst * 2, side=1024, tolerance=30)  # the same photos at twice the size
    assert (bigger == loose).all()
