"""Where the instance is: a foreground weight map per image from an ImageNet classifier's class
activation map (CAM), so local features come from the animal or the building, not the scene.

Why a CAM: it needs no training and no download; the packaged EfficientNet-Lite0 weights include
their 1000-class classifier, and its top classes light up on the object the photo is of. timm has
no CAM helper, so the few lines that weight the last feature map by the classifier rows are here.
"""

from __future__ import annotations

import numpy as np
import timm
import torch
from PIL import Image

from kenning.data.transforms import eval_transform
from kenning.embeddings.pretrained import load_classifier_weights

CAM_BACKBONE = "tf_efficientnet_lite0"
CAM_SIZE = 384  # px: a 12 x 12 map, fine enough for a flank and cheap on a CPU
TOP_CLASSES = 5  # the map sums the activation of the classifier's five most probable classes


class Foreground:
    """Images -> weight maps in [0, 1] (1 where the instance most likely is), at CAM resolution."""

    def __init__(self, size: int = CAM_SIZE, device: torch.device | None = None):
        self.model = timm.create_model(CAM_BACKBONE, pretrained=False, num_classes=1000)
        load_classifier_weights(self.model, CAM_BACKBONE)
        self.device = device or torch.device("cpu")
        self.model.eval().to(self.device)
        data = timm.data.resolve_data_config({}, model=self.model)
        self.transform = eval_transform(size, tuple(data["mean"]), tuple(data["std"]))

    @torch.no_grad()
    def maps(self, images: list[Image.Image]) -> list[np.ndarray]:
        """One (h, w) float32 map per image; the image is squashed to a square, so map cell (i, j)
        covers the same share of every image whatever its aspect ratio."""
        if not images:
            return []
        batch = torch.stack([self.transform(img) for img in images]).to(self.device)
        _, cam = self.features_and_maps(batch)
        return list(cam.cpu().numpy().astype(np.float32))

    def features_and_maps(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images -> the last feature map (b, c, h, w) and its CAM (b, h, w) in [0, 1]."""
        features = self.model.forward_features(batch)  # (b, c, h, w), after the head convolution
        logits = self.model.forward_head(features)
        weight = self.model.get_classifier().weight  # (1000, c)
        top = logits.topk(TOP_CLASSES, dim=1)
        probs = torch.softmax(logits, dim=1).gather(1, top.indices)
        cams = torch.einsum("bkc,bchw->bkhw", weight[top.indices], features).clamp(min=0)
        cam = (cams * probs[:, :, None, None]).sum(1)
        peak = cam.flatten(1).amax(1).clamp(min=1e-12)
        return features, cam / peak[:, None, None]


def weight_at(weight_map: np.ndarray, x: np.ndarray, y: np.ndarray, width: int, height: int) -> np.ndarray:
    """The map's value at pixel positions (x, y) of a width x height image (bilinear)."""
    h, w = weight_map.shape
    gx = np.clip((np.asarray(x) + 0.5) / width * w - 0.5, 0, w - 1)
    gy = np.clip((np.asarray(y) + 0.5) / height * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(gx).astype(int), np.floor(gy).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = gx - x0, gy - y0
    top = weight_map[y0, x0] * (1 - fx) + weight_map[y0, x1] * fx
    bottom = weight_map[y1, x0] * (1 - fx) + weight_map[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)
