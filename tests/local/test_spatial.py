"""Spatial verification on real photographs: a disguised copy agrees with its source on one
similarity transform by many matches, with another photo by almost none; same answer every run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kenning.config import LocalConfig
from kenning.local.features import extract_paths
from kenning.local.featureset import LocalFeatures
from kenning.local.spatial import inliers
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
