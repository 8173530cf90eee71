"""Spatial verification: how many of two images' descriptor matches agree on one geometric transform.

LNBNN counts matches one by one; on the same instance many of them also agree in *where* they
are. Lowe's ratio test keeps the distinctive matches, and RANSAC (OpenCV) finds the largest set
consistent with one similarity transform (rotation, uniform scale, translation: a photo of the same
flank or facade from a little further or tilted). The inlier count is a score part of its own,
calibrated like the others. A similarity rather than a homography: four parameters are fitted
more reliably from the few matches a bending animal gives than eight. `consistent` applies the
same test to LNBNN's own votes for one gallery image (`local.spatial`).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from kenning.local.featureset import LocalFeatures, as_float

RATIO = 0.8  # Lowe's ratio test: nearest / second-nearest descriptor distance
MIN_MATCHES = 6  # fewer ratio-test matches than this cannot vote for a transform
REPROJECTION_PX = 12.0  # RANSAC inlier tolerance, in pixels of the stored keypoint coordinates
MIN_INLIERS = 3  # fewer votes than this that agree on a transform are chance


def inliers(query: LocalFeatures, gallery: LocalFeatures) -> int:
    """Ratio-test matches of `query` in `gallery` that one similarity transform explains."""
    if len(query) < MIN_MATCHES or len(gallery) < 2:
        return 0
    q = torch.from_numpy(as_float(query.descriptors))
    g = torch.from_numpy(as_float(gallery.descriptors))
    dist, nearest = torch.cdist(q, g).topk(2, dim=1, largest=False)
    good = (dist[:, 0] < RATIO * dist[:, 1]).numpy()
    if good.sum() < MIN_MATCHES:
        return 0
    src = query.keypoints[good, :2].astype(np.float32)
    dst = gallery.keypoints[nearest[:, 0].numpy()[good], :2].astype(np.float32)
    cv2.setRNGSeed(0)  # RANSAC's samples: the same answer for the same photos, run after run
    _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=REPROJECTION_PX)
    return 0 if mask is None else int(mask.sum())


def consistent(src: np.ndarray, dst: np.ndarray, side: float, tolerance: float = REPROJECTION_PX) -> np.ndarray:
    """Which correspondences src[i] -> dst[i] one similarity transform explains, to within
    `tolerance` px per 512 px of `side` (the target image's longest side, so the same share at any
    size); none when fewer than MIN_INLIERS do."""
    out = np.zeros(len(src), bool)
    if len(src) < MIN_INLIERS:
        return out
    cv2.setRNGSeed(0)
    _, mask = cv2.estimateAffinePartial2D(
        src.astype(np.float32), dst.astype(np.float32), method=cv2.RANSAC, ransacReprojThreshold=tolerance * side / 512
    )
    if mask is not None and mask.sum() >= MIN_INLIERS:
        out = mask.ravel().astype(bool)
    return out
