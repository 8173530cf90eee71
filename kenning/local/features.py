"""Images -> local features on the instance, by the family `local.method` names (registry.py):
the foreground map of each image (foreground.py) and the family's keypoints and descriptors."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
from PIL import Image
from tqdm import tqdm

from kenning.config import LocalConfig
from kenning.data.images import load_image
from kenning.errors import KenningError
from kenning.local.extractor import create_extractor
from kenning.local.featureset import LocalFeatures
from kenning.local.foreground import Foreground

BATCH = 16  # images per foreground batch


@dataclass
class Extracted:
    features: list[LocalFeatures | None]  # one per path; None where the image could not be read
    errors: list[str]


def extract_paths(
    paths: Sequence[str], cfg: LocalConfig, foreground: Foreground | None = None, progress: bool = True
) -> Extracted:
    """Local features of each image; an unreadable one gives None and one warning line."""
    extractor = create_extractor(cfg.method)
    foreground = foreground or Foreground()
    cv2.setNumThreads(0)  # OpenCV's own thread pool: SIFT's pyramid and extrema (and RANSAC) use every core
    features: list[LocalFeatures | None] = [None] * len(paths)
    errors: list[str] = []
    bar = tqdm(total=len(paths), desc="local features", unit="img", disable=not progress)
    for start in range(0, len(paths), BATCH):
        images: list[tuple[int, Image.Image]] = []
        for i in range(start, min(start + BATCH, len(paths))):
            try:
                images.append((i, load_image(paths[i])))
            except KenningError as exc:
                errors.append(str(exc))
                if progress:
                    tqdm.write(f"warning: skipped {exc}", file=sys.stderr)
        maps = foreground.maps([img for _, img in images])
        for (i, img), fmap in zip(images, maps, strict=True):
            features[i] = extractor(img, fmap, cfg)
        bar.update(min(start + BATCH, len(paths)) - start)
    bar.close()
    return Extracted(features, errors)
