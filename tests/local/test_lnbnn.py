"""Local matching on real photographs (scikit-image's bundled samples): a rotated, scaled, partly
occluded copy of a photo finds its source first by LNBNN, with the foreground map on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from kenning.config import LocalConfig
from kenning.local.features import extract_paths
from kenning.local.featureset import FeatureSet
from kenning.local.lnbnn import LnbnnMatcher, _nsum
from kenning.local.sift import LAYOUT, root_sift

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in PHOTOS:
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(out / f"{name}.jpg", quality=92)
        paths[name] = out / f"{name}.jpg"
    return paths


def _disguise(path: Path, out: Path) -> Path:
    """Rotated 25 degrees, scaled to 70 %, its right quarter covered by a grey block."""
    img = Image.open(path).convert("RGB")
    img = img.rotate(25, resample=Image.BILINEAR, expand=True, fillcolor=(90, 90, 90))
    img = img.resize((int(img.width * 0.7), int(img.height * 0.7)), Image.BILINEAR)
    pixels = np.asarray(img).copy()
    pixels[:, int(pixels.shape[1] * 0.75) :] = 128
    Image.fromarray(pixels).save(out, quality=90)
    return out


@pytest.mark.parametrize(("source", "whiten"), [("chelsea", False), ("coffee", False), ("astronaut", True)])
def test_a_disguised_copy_finds_its_source_first(
    photos: dict[str, Path], tmp_path: Path, source: str, whiten: bool
) -> None:
    cfg = LocalConfig(method="sift", max_keypoints=500)
    gallery = extract_paths([str(photos[n]) for n in PHOTOS], cfg, progress=False)
    assert not gallery.errors and all(len(f) > 50 for f in gallery.features)
    features = FeatureSet.of(range(len(PHOTOS)), gallery.features, LAYOUT)
    matcher = LnbnnMatcher(features, np.array(PHOTOS), k=3, whiten=whiten)
    assert (matcher.whitening is not None) == whiten and (not whiten or matcher.whitening.blocks)
    query = extract_paths([str(_disguise(photos[source], tmp_path / "q.jpg"))], cfg, progress=False).features[0]
    scores = matcher.score(query)
    assert scores.labels[0] == source
    assert scores.label_scores[0] > 2 * scores.label_scores[1]  # not a near tie: the stripes, not the noise
    assert PHOTOS[int(scores.image_ids[0])] == source and len(scores.matches[int(scores.image_ids[0])]) >= 10


def test_excluded_images_never_match(photos: dict[str, Path]) -> None:
    cfg = LocalConfig(method="sift", max_keypoints=300)
    features = extract_paths([str(photos[n]) for n in PHOTOS], cfg, progress=False).features
    matcher = LnbnnMatcher(FeatureSet.of(range(len(PHOTOS)), features, LAYOUT), np.array(PHOTOS), k=3)
    alone = matcher.score(features[2])
    assert alone.labels[0] == "chelsea"  # itself
    without = matcher.score(features[2], exclude=np.array([2]))
    assert "chelsea" not in without.labels and 2 not in without.image_ids


def test_root_sift_is_unit_hellinger_and_fits_uint8() -> None:
    raw = np.random.default_rng(0).integers(0, 200, (50, 128)).astype(np.float32)
    rs = root_sift(raw).astype(np.float64) / 255
    assert np.allclose(np.linalg.norm(rs, axis=1), 1.0, atol=0.03)
    assert np.allclose(rs**2, raw / raw.sum(1, keepdims=True), atol=0.02)


def test_an_unreadable_image_is_skipped_with_one_error(photos: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(photos["chelsea"].read_bytes()[:500])
    extracted = extract_paths([str(photos["coffee"]), str(bad)], LocalConfig(method="sift"), progress=False)
    assert extracted.features[0] is not None and extracted.features[1] is None
    assert len(extracted.errors) == 1 and "bad.jpg" in extracted.errors[0] and "\n" not in extracted.errors[0]


@pytest.mark.parametrize("limit", [2_000_000, 1])
def test_a_matcher_over_base_and_enrolments_scores_as_one_over_the_live_images(
    photos: dict[str, Path], limit: int
) -> None:
    """Base rows in a reusable index, enrolments searched apart, forgotten base rows skipped: the
    same scores as one matcher over the live images alone, and the base's index is shared. With a
    `limit` of 1 descriptor nothing is indexed and every image is a shortlisted candidate."""
    cfg = LocalConfig(method="sift", max_keypoints=300)
    features = extract_paths([str(photos[n]) for n in PHOTOS], cfg, progress=False).features
    everything = FeatureSet.of(range(len(PHOTOS)), features, LAYOUT)
    labels = np.array(PHOTOS)
    first = np.arange(len(PHOTOS)) < 4
    base = LnbnnMatcher(everything.select(first), labels[:4], k=3, max_descriptors=limit)
    # later: "camera" and "immunohistochemistry" enrolled, "coffee" (row 1) forgotten
    later = everything.select(~first)
    live = np.arange(len(PHOTOS)) != 1
    everyone = np.arange(len(PHOTOS))
    for spatial in (0, 3):  # re-scored from inliers: the enrolments' keypoints are read from the tail
        grown = LnbnnMatcher(
            everything.select(first), labels, 3, limit, dead=np.array([1]), reuse=base, tail=later, spatial=spatial
        )
        plain = LnbnnMatcher(everything.select(live), labels[live], k=3, max_descriptors=limit, spatial=spatial)
        assert grown.index is base.index and (grown.tail is not None) == (limit > 1)
        assert grown.searchable == (limit > 1)
        for query in features:
            a, b = grown.score(query, candidates=everyone), plain.score(query, candidates=everyone)
            assert a.labels == b.labels and "coffee" not in a.labels
            assert len(a.labels) <= (3 if spatial else len(PHOTOS))
            np.testing.assert_allclose(a.label_scores, b.label_scores, rtol=1e-5)
            np.testing.assert_array_equal(a.image_ids, b.image_ids)
    if limit > 1:
        other_base = LnbnnMatcher(everything, labels, k=3, reuse=base)  # another base: rebuilt
        assert other_base.index is not base.index


def test_a_whitened_base_keeps_its_whitening_when_enrolments_arrive(photos: dict[str, Path]) -> None:
    """The base's descriptor index was searched in its whitened space: a matcher reusing it must
    whiten queries and enrolments the same way, not refit on the grown gallery."""
    cfg = LocalConfig(method="sift", max_keypoints=300)
    features = extract_paths([str(photos[n]) for n in PHOTOS], cfg, progress=False).features
    everything, labels = FeatureSet.of(range(len(PHOTOS)), features, LAYOUT), np.array(PHOTOS)
    first = np.arange(len(PHOTOS)) < 4
    base = LnbnnMatcher(everything.select(first), labels[:4], k=3, whiten=True)
    grown = LnbnnMatcher(everything.select(first), labels, k=3, reuse=base, tail=everything.select(~first), whiten=True)
    assert grown.index is base.index and grown.whitening is base.whitening
    assert grown.score(features[5]).labels[0] == PHOTOS[5]  # an enrolment found in the base's space
    refit = LnbnnMatcher(everything, labels, k=3, whiten=True)
    assert refit.whitening is not base.whitening


def test_spatial_rescoring_keeps_the_votes_of_a_true_match_and_drops_scrambled_ones(
    photos: dict[str, Path], tmp_path: Path
) -> None:
    """A gallery copy of the source whose keypoints are shuffled has the same descriptors, so plain
    LNBNN scores it like the source; no one transform explains its votes, so re-scored it drops out."""
    cfg = LocalConfig(method="sift", max_keypoints=400)
    features = extract_paths([str(photos[n]) for n in PHOTOS], cfg, progress=False).features
    source = features[PHOTOS.index("chelsea")]
    order = np.random.default_rng(0).permutation(len(source))
    scrambled = dataclasses.replace(source, keypoints=source.keypoints[order])
    gallery = FeatureSet.of(range(len(PHOTOS) + 1), [*features, scrambled], LAYOUT)
    labels = np.array([*PHOTOS, "scrambled"])
    query = extract_paths([str(_disguise(photos["chelsea"], tmp_path / "q.jpg"))], cfg, progress=False).features[0]
    plain = LnbnnMatcher(gallery, labels, k=3).score(query)
    checked = LnbnnMatcher(gallery, labels, k=3, spatial=3).score(query)
    plain_of = dict(zip(plain.labels, plain.label_scores, strict=True))
    checked_of = dict(zip(checked.labels, checked.label_scores, strict=True))
    assert plain_of["scrambled"] > 0.5 * plain_of["chelsea"]  # the descriptors alone cannot tell them apart
    assert checked.labels[0] == "chelsea" and checked_of["chelsea"] > 0.5 * plain_of["chelsea"]
    assert checked_of.get("scrambled", 0.0) < 0.1 * checked_of["chelsea"]
    assert set(checked.labels) <= set(plain.labels[:3])  # only the 3 best images were re-scored


def test_name_scoring_sums_each_descriptors_best_vote_over_an_identitys_images(
    photos: dict[str, Path], tmp_path: Path
) -> None:
    """Chelsea's photo cut into two overlapping halves, two gallery images of one cat: scored as its
    best image the cat gets one half's votes, by name scoring (nsum) both halves', a descriptor that
    voted for both counted once; an identity with one image scores the same either way."""
    cfg = LocalConfig(method="sift", max_keypoints=400)
    cat = Image.open(photos["chelsea"])
    halves = []
    for i, box in enumerate([(0, 0, cat.width // 2 + 20, cat.height), (cat.width // 2 - 20, 0, cat.width, cat.height)]):
        cat.crop(box).save(tmp_path / f"half{i}.jpg", quality=92)
        halves.append(str(tmp_path / f"half{i}.jpg"))
    others = [n for n in PHOTOS if n != "chelsea"]
    features = extract_paths(halves + [str(photos[n]) for n in others], cfg, progress=False).features
    gallery = FeatureSet.of(range(len(features)), features, LAYOUT)
    labels = np.array(["cat", "cat", *others])
    query = extract_paths([str(_disguise(photos["chelsea"], tmp_path / "q.jpg"))], cfg, progress=False).features[0]
    best = LnbnnMatcher(gallery, labels, k=3).score(query)
    nsum = LnbnnMatcher(gallery, labels, k=3, identity_score="nsum").score(query)
    best_of = dict(zip(best.labels, best.label_scores, strict=True))
    nsum_of = dict(zip(nsum.labels, nsum.label_scores, strict=True))
    image_of = dict(zip(best.image_ids.tolist(), best.image_scores, strict=True))
    np.testing.assert_array_equal(nsum.image_ids, best.image_ids)  # images are scored alike
    assert best_of["cat"] == pytest.approx(max(image_of[0], image_of[1]))
    assert 1.3 * best_of["cat"] < nsum_of["cat"] < image_of[0] + image_of[1]  # both halves; overlap once
    for name in others:
        assert nsum_of.get(name, 0.0) == pytest.approx(best_of.get(name, 0.0))


def test_name_scoring_of_no_vote_is_zero_for_everyone() -> None:
    """Re-scoring can drop every vote of a query: name scoring then gives every identity 0."""
    none = np.zeros(0, np.int64)
    np.testing.assert_array_equal(_nsum(none, none, np.zeros(0), 3), np.zeros(3))
    np.testing.assert_allclose(_nsum(np.array([0, 0, 1]), np.array([2, 2, 2]), np.array([1.0, 3.0, 2.0]), 3), [0, 0, 5])
