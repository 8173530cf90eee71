"""The SIFT family: RootSIFT keypoints on the instance (OpenCV SIFT, kept where the foreground map
is high), scored by LNBNN.

RootSIFT (Arandjelovic & Zisserman, 2012): the square root of the L1-normalised SIFT descriptor,
so Euclidean distance between them compares histograms by the Hellinger kernel; it matches better
than SIFT at no cost. Descriptors are stored as uint8 (x 255), keypoints as x, y, scale, angle in
pixels of the original image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from kenning.config import LocalConfig
from kenning.local.featureset import Layout, LocalFeatures
from kenning.local.foreground import weight_at

LAYOUT = Layout(128, "uint8")


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """SIFT -> RootSIFT, as uint8 (x 255; each value is at most 1)."""
    d = descriptors.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
    return np.clip(np.rint(np.sqrt(d) * 255), 0, 255).astype(np.uint8)


def sift_features(image: Image.Image, foreground: np.ndarray, cfg: LocalConfig) -> LocalFeatures:
    """Detect SIFT keypoints on the image resized to `cfg.image_side` (longest side), keep those
    whose foreground weight is at least `cfg.foreground` and the strongest `cfg.max_keypoints` of
    them, and describe them as RootSIFT. `cfg.contrast` is SIFT's contrast threshold: lions' ~130 px
    crops give 261 keypoints at the default 0.04 and 921 at 0.01 (train LNBNN Recall@1 0.503 -> 0.532)."""
    width, height = image.size
    scale = cfg.image_side / max(width, height) if cfg.image_side else 1.0
    gray = np.asarray(image.convert("L"))
    if scale != 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    sift = cv2.SIFT_create(contrastThreshold=cfg.contrast)
    keypoints = sift.detect(gray, None)
    if cfg.upright:
        keypoints = [cv2.KeyPoint(k.pt[0], k.pt[1], k.size, 0.0, k.response, k.octave) for k in keypoints]
    xy = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2) / scale
    weights = weight_at(foreground, xy[:, 0], xy[:, 1], width, height) if len(xy) else np.zeros(0, np.float32)
    response = np.array([k.response for k in keypoints], np.float32)
    keep = np.flatnonzero(weights >= cfg.foreground)
    keep = keep[np.argsort(-response[keep], kind="stable")[: cfg.max_keypoints]]
    chosen = [keypoints[i] for i in keep]
    descriptors = np.zeros((0, LAYOUT.dim), np.uint8)
    if chosen:
        chosen, raw = sift.compute(gray, chosen)
        descriptors = root_sift(raw)
    points = np.array([[*k.pt, k.size, k.angle] for k in chosen], np.float32).reshape(-1, 4)
    points[:, :3] /= scale
    chosen_xy = points[:, :2]
    return LocalFeatures(
        keypoints=points,
        descriptors=descriptors,
        weights=weight_at(foreground, chosen_xy[:, 0], chosen_xy[:, 1], width, height)
        if len(points)
        else np.zeros(0, np.float32),
        foreground=foreground.astype(np.float16),
        size=(width, height),
    )


@dataclass(frozen=True)
class Sift:
    name: str = "sift"
    layout: Layout = LAYOUT
    matcher: str = "lnbnn"

    def __call__(self, image: Image.Image, foreground: np.ndarray, cfg: LocalConfig) -> LocalFeatures:
        return sift_features(image, foreground, cfg)


EXTRACTOR = Sift()
