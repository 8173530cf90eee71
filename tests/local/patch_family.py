"""A second local-feature family, for tests: grey 4 x 4 patches on a grid, 16 float16 values each.

It is what adding a family takes: this one module, defining EXTRACTOR, and one line in
kenning/local/registry.py (the tests add that line at run time). Its descriptors differ from
SIFT's in size and dtype, so every stored feature set must carry them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from kenning.config import LocalConfig
from kenning.local.featureset import Layout, LocalFeatures
from kenning.local.foreground import weight_at

LAYOUT = Layout(16, "float16")
GRID = 12  # cells per side; each cell's centre is a keypoint, its 4 x 4 grey patch the descriptor


@dataclass(frozen=True)
class Patches:
    name: str = "patches"
    layout: Layout = LAYOUT
    matcher: str = "lnbnn"

    def __call__(self, image: Image.Image, foreground: np.ndarray, cfg: LocalConfig) -> LocalFeatures:
        width, height = image.size
        grey = np.asarray(image.convert("L").resize((GRID * 4, GRID * 4)), np.float32) / 255
        cells = grey.reshape(GRID, 4, GRID, 4).transpose(0, 2, 1, 3).reshape(GRID * GRID, 16)
        cells = cells - cells.mean(axis=1, keepdims=True)
        centres = (np.arange(GRID) + 0.5) / GRID
        xs, ys = np.meshgrid(centres * width, centres * height)
        xy = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
        weights = weight_at(foreground, xy[:, 0], xy[:, 1], width, height)
        keep = np.flatnonzero(weights >= cfg.foreground)[: cfg.max_keypoints]
        points = np.concatenate([xy[keep], np.full((len(keep), 2), [width / GRID, 0.0], np.float32)], 1)
        return LocalFeatures(
            keypoints=points,
            descriptors=cells[keep].astype(np.float16),
            weights=weights[keep],
            foreground=foreground.astype(np.float16),
            size=(width, height),
        )


EXTRACTOR = Patches()
