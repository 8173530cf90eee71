"""The SIFT family's extraction settings on generated images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from kenning.config import LocalConfig, load_config
from kenning.errors import KenningError
from kenning.local.sift import sift_features


def _flat_crop(seed: int = 0) -> Image.Image:
    """A small, low-contrast texture: the kind of ~130 px crop lions come as."""
    noise = np.random.default_rng(seed).normal(size=(130, 110)).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), 2.0)
    texture = 128 + 40 * texture / np.abs(texture).max()
    return Image.fromarray(texture.astype(np.uint8)).convert("RGB")


def test_a_lower_contrast_threshold_finds_more_keypoints_on_a_flat_crop() -> None:
    image, foreground = _flat_crop(), np.ones((8, 8), np.float32)
    counts = {
        c: len(sift_features(image, foreground, LocalConfig(method="sift", image_side=256, foreground=0.0, contrast=c)))
        for c in (0.04, 0.01)
    }
    assert counts[0.04] > 0 and counts[0.01] >= 5 * counts[0.04]  # measured: 11 and 296


@pytest.mark.parametrize("value", ["0", "-0.01", "1.5", "nan"])
def test_a_contrast_outside_its_range_is_refused_when_the_config_loads(value: str) -> None:
    with pytest.raises(KenningError, match=r"local\.contrast"):
        load_config(None, {"local.contrast": value})
