"""The joined family (RootSIFT and DISK in one set) on real photographs: one LNBNN over both never
matches a descriptor of one family to the other's, so an image's score is the sum of the two
families' scores, and a disguised copy still finds its source first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kenning.config import LocalConfig
from kenning.errors import KenningError
from kenning.local.extractor import create_extractor, matcher_class
from kenning.local.features import extract_paths
from kenning.local.featureset import FeatureSet
from kenning.local.glue import create_glue
from kenning.local.joined import JoinedMatcher, joined
from kenning.local.lnbnn import LnbnnMatcher
from tests.local.test_lnbnn import PHOTOS, _disguise, photos  # noqa: F401 (photos: the fixture)

KEYPOINTS = {"sift": 256, "disk": 128, "sift+disk": 256}  # the joined family's DISK gets half of max_keypoints


def _extract(family: str, paths: list[str]) -> list:
    cfg = LocalConfig(method=family, max_keypoints=KEYPOINTS[family], image_side=512)
    return extract_paths(paths, cfg, progress=False).features


@pytest.fixture(scope="module")
def families(photos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list, object]]:  # noqa: F811
    """Each family's features of the gallery photos and of a disguised chelsea, extracted alike; the
    joined family's extractor runs on two of them (each family's network once per image is enough)."""
    query = str(_disguise(photos["chelsea"], tmp_path_factory.mktemp("joined") / "q.jpg"))
    gallery = [str(photos[n]) for n in PHOTOS]
    out = {}
    for family in ("sift", "disk"):
        found = _extract(family, [*gallery, query])
        out[family] = (found[:-1], found[-1])
    layout = create_extractor("sift+disk").layout
    both = [joined([s, d], layout) for s, d in zip(out["sift"][0], out["disk"][0], strict=True)]
    out["sift+disk"] = (both, joined([out["sift"][1], out["disk"][1]], layout))
    out["extracted"] = (_extract("sift+disk", [gallery[0], query]), None)
    return out


def _matcher(family: str, gallery: list, labels: list[str] = PHOTOS, whiten: bool = False) -> LnbnnMatcher:
    extractor = create_extractor(family)
    matcher = matcher_class(extractor.matcher)
    features = FeatureSet.of(range(len(PHOTOS)), gallery, extractor.layout)
    return matcher(features, np.array(labels), k=3, whiten=whiten)


def test_joined_features_are_each_familys_in_its_own_block(families) -> None:
    sift, disk, both = (families[f][0] for f in ("sift", "disk", "sift+disk"))
    extracted = families["extracted"][0]
    for got, want in zip(extracted, [both[0], families["sift+disk"][1]], strict=True):  # the extractor itself
        assert np.array_equal(got.descriptors, want.descriptors) and np.array_equal(got.keypoints, want.keypoints)
        assert np.allclose(got.weights, want.weights, atol=1e-5) and got.size == want.size  # maps batched apart
    for s, d, j in zip(sift, disk, both, strict=True):
        assert j.descriptors.dtype == np.float16 and j.descriptors.shape == (len(s) + len(d), 256)
        assert not np.any(j.descriptors[: len(s), 128:]) and not np.any(j.descriptors[len(s) :, :128])
        assert np.array_equal(j.keypoints, np.concatenate([s.keypoints, d.keypoints]))
        assert 0 < len(s) <= 256 and 0 < len(d) <= 128  # SIFT's budget, DISK's half of it


@pytest.mark.parametrize("whiten", [False, True])
def test_one_index_scores_an_image_and_an_identity_by_its_two_families(families, whiten: bool) -> None:
    """An image: the sum of its families' scores; an identity: the sum of its best image's in each
    family (here rocket is relabelled chelsea, so chelsea's two families may pick different photos).
    Whitened, each family's block is whitened as that family alone would be."""
    (sift, sift_q), (disk, disk_q), (both, both_q) = (families[f] for f in ("sift", "disk", "sift+disk"))
    labels = [("chelsea" if n == "rocket" else n) for n in PHOTOS]
    parts = [_matcher(f, g, labels, whiten).score(q) for f, g, q in (("sift", sift, sift_q), ("disk", disk, disk_q))]
    matcher = _matcher("sift+disk", both, labels, whiten)
    assert whiten == (matcher.whitening is not None) and (not whiten or len(matcher.whitening.blocks) == 2)
    assert isinstance(matcher, JoinedMatcher) and isinstance(_matcher("sift", sift), LnbnnMatcher)
    joined = matcher.score(both_q)
    per_image = np.zeros((2, len(PHOTOS)))
    for p, found in zip(per_image, parts, strict=True):
        p[found.image_ids] = found.image_scores
    got = np.zeros(len(PHOTOS))
    got[joined.image_ids] = joined.image_scores
    assert np.allclose(got, per_image.sum(0), rtol=0.02, atol=1e-3), (got, per_image)
    names = sorted(set(labels))
    expected = {n: sum(p[[lab == n for lab in labels]].max() for p in per_image) for n in names}
    scored = dict(zip(joined.labels, joined.label_scores, strict=True))
    assert all(np.isclose(scored.get(n, 0.0), expected[n], rtol=0.02, atol=1e-3) for n in names), (scored, expected)
    assert joined.labels[0] == "chelsea" and joined.label_scores[0] > 1.5 * joined.label_scores[1]
    best = int(joined.image_ids[0])
    pairs = joined.matches[best]
    query_sift, gallery_sift = len(sift_q), len(sift[best])
    assert len(pairs) >= 20 and np.array_equal(pairs[:, 0] < query_sift, pairs[:, 1] < gallery_sift)  # never across


def test_the_joined_family_has_no_learned_matcher() -> None:
    with pytest.raises(
        KenningError, match=r"local\.glue needs a family with a learned matcher .*; sift\+disk has none"
    ):
        create_glue("sift+disk")
