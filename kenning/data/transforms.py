"""Image -> tensor transforms, built with timm's transform factory."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from timm.data import create_transform
from torchvision import transforms as T

from kenning.config import TrainConfig


def eval_transform(
    image_size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> Callable[[Image.Image], torch.Tensor]:
    # crop_pct=1: the whole instance stays in view (a centre crop can cut off the identifying part)
    return create_transform(image_size, is_training=False, mean=mean, std=std, crop_pct=1.0, crop_mode="squash")


def train_transform(
    image_size: int, mean: tuple[float, ...], std: tuple[float, ...], cfg: TrainConfig
) -> Callable[[Image.Image], torch.Tensor]:
    """Random resized crop, colour jitter and (off by default) flips from timm, after a small rotation
    (timm's factory has none; the photographer's tilt varies more than the subject's pose)."""
    augment = create_transform(
        image_size,
        is_training=True,
        mean=mean,
        std=std,
        scale=(cfg.scale_min, 1.0),
        hflip=0.5 if cfg.hflip else 0.0,
        color_jitter=cfg.color_jitter,
    )
    if cfg.rotation <= 0:
        return augment
    return T.Compose([T.RandomRotation(cfg.rotation, interpolation=T.InterpolationMode.BILINEAR), augment])
