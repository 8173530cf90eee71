"""Two families in one: RootSIFT and DISK keypoints of one image, scored by one LNBNN.

Measured on nyala (benchmarks/two_families.py, protocol A, LNBNN alone): the two families err on
different photos, so each answers queries the other misses. Each descriptor is stored in its own
block of a longer vector with zeros in the other family's block: descriptors of different families
are orthogonal (squared distance 2), farther than any descriptor's K+1 nearest of its own family,
so one search structure never matches across families. An image scores the sum of its two
families' LNBNN scores; an identity, the sum of its best image's in each family (on nyala train
0.268 against 0.256 for its best image's sum: the two families' best photos of one animal need not
be the same photo). What this costs: both extractions per image, and four times SIFT's bytes per
descriptor (256 float16, half of them zero, against 128 uint8).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np
from PIL import Image

from kenning.config import LocalConfig
from kenning.local.extractor import create_extractor
from kenning.local.featureset import Layout, LocalFeatures, as_float
from kenning.local.lnbnn import LnbnnMatcher


@dataclass(frozen=True)
class Joined:
    """An extractor (the Extractor protocol) of several registered families; `shares[i]`: family
    i's keypoints as a share of `local.max_keypoints` (SIFT's 1000 and DISK's 500 by default)."""

    name: str
    families: tuple[str, ...]
    shares: tuple[float, ...]
    layout: Layout
    matcher: str = "joined"

    @property
    def blocks(self) -> np.ndarray:
        """Where each family's block starts in a joined descriptor."""
        return np.cumsum([0, *(create_extractor(f).layout.dim for f in self.families[:-1])])

    def __call__(self, image: Image.Image, foreground: np.ndarray, cfg: LocalConfig) -> LocalFeatures:
        parts = [
            create_extractor(family)(
                image, foreground, replace(cfg, max_keypoints=max(1, round(cfg.max_keypoints * s)))
            )
            for family, s in zip(self.families, self.shares, strict=True)
        ]
        return joined(parts, self.layout)


def joined(parts: list[LocalFeatures], layout: Layout) -> LocalFeatures:
    """One image's features of several families as one set: family i's unit descriptors in the
    i-th block of `layout.dim`, zeros elsewhere; keypoints, weights in the same order."""
    blocks, start = [], 0
    for p in parts:
        block = np.zeros((len(p), layout.dim), layout.dtype)
        width = p.descriptors.shape[1]
        block[:, start : start + width] = as_float(p.descriptors)
        blocks.append(block)
        start += width
    return LocalFeatures(
        np.concatenate([p.keypoints for p in parts]),
        np.concatenate(blocks),
        np.concatenate([p.weights for p in parts]).astype(np.float32),
        parts[0].foreground,
        parts[0].size,
    )


class JoinedMatcher(LnbnnMatcher):
    """LNBNN over joined features, each family one part of the evidence (registry.MATCHERS['joined'])."""

    def bounds(self, dim: int) -> list[tuple[int, int]]:
        """Each family's block of a joined descriptor."""
        return list(pairwise([*(int(b) for b in EXTRACTOR.blocks), dim]))

    def parts(self, descriptors: np.ndarray) -> np.ndarray:
        """A descriptor's family: the block it is non-zero in."""
        bounds = self.bounds(descriptors.shape[1])
        mass = [np.abs(descriptors[:, a:b].astype(np.float32)).sum(1) for a, b in bounds]
        return np.argmax(np.stack(mass, 1), 1) if len(descriptors) else np.zeros(0, np.int64)


MATCHER = JoinedMatcher
EXTRACTOR = Joined("sift+disk", ("sift", "disk"), (1.0, 0.5), Layout(256, "float16"))
