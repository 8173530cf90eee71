"""PCA whitening of local descriptors (local.whiten): unit variance in every direction of a block,
zeros of a joined descriptor's other block kept, too few descriptors left as they are."""

from __future__ import annotations

import numpy as np

from kenning.local.whitening import MIN_PER_DIM, fit_whitening, sample_rows


def _correlated(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Gaussian rows with standard deviations 3 to 1 along random orthogonal directions."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    return (rng.normal(size=(n, dim)) * np.linspace(3.0, 1.0, dim)) @ rotation + 2.0


def test_a_whitened_block_has_unit_variance_in_every_direction() -> None:
    x = _correlated(20_000, 16)
    block = fit_whitening(x, np.zeros(len(x), np.int64), [(0, 16)]).blocks[0]
    y = (x - block.mean) @ block.projection
    assert np.abs(np.cov(x, rowvar=False) - np.eye(16)).max() > 1.0  # far from white before
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(16), atol=0.03)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-6)


def test_each_family_is_whitened_in_its_own_block_and_rows_stay_unit() -> None:
    a, b = _correlated(3_000, 8, 1), _correlated(3_000, 4, 2)
    joined = np.zeros((6_000, 12), np.float32)
    joined[:3_000, :8], joined[3_000:, 8:] = a, b
    parts = np.repeat([0, 1], 3_000)
    whitening = fit_whitening(joined, parts, [(0, 8), (8, 12)])
    out = whitening(joined.copy(), parts)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert not out[:3_000, 8:].any() and not out[3_000:, :8].any()  # families stay orthogonal
    expected = (b - whitening.blocks[1].mean) @ whitening.blocks[1].projection
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(out[3_000:, 8:], expected, atol=1e-5)


def test_a_block_with_too_few_descriptors_is_left_unwhitened() -> None:
    x = _correlated(MIN_PER_DIM * 16 - 1, 16).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    whitening = fit_whitening(x, np.zeros(len(x), np.int64), [(0, 16)])
    assert whitening.blocks == ()
    np.testing.assert_allclose(whitening(x.copy(), np.zeros(len(x), np.int64)), x, atol=1e-6)


def test_the_sample_is_seeded_sorted_and_bounded() -> None:
    small, big = sample_rows(10), sample_rows(1_000_000)
    np.testing.assert_array_equal(small, np.arange(10))
    assert len(big) == len(np.unique(big)) == 200_000 and np.all(np.diff(big) > 0)
    np.testing.assert_array_equal(big, sample_rows(1_000_000))
    assert big.max() < 1_000_000 and len(sample_rows(200_001)) == 200_000


def test_the_sample_of_a_large_file_touches_few_pages() -> None:
    """A 100k-image gallery (63M SIFT descriptors of 128 bytes): the sample reads tens of MB of pages,
    not one page per sampled row, and still reaches both ends of the file."""
    total, row_bytes, page = 63_000_000, 128, 4096
    rows = sample_rows(total)
    pages = np.unique(rows * row_bytes // page)
    assert len(pages) * page < 50 * 2**20
    assert rows.min() < total // 100 and rows.max() > total - total // 100
