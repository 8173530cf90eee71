"""Loss factory over pytorch-metric-learning's losses."""

from __future__ import annotations

from pytorch_metric_learning import losses
from torch import nn

from kenning.config import TrainConfig


def create_loss(cfg: TrainConfig, num_classes: int, embedding_dim: int) -> nn.Module:
    """ArcFace over the training identities; its class centres are trainable parameters."""
    return losses.ArcFaceLoss(
        num_classes=num_classes,
        embedding_size=embedding_dim,
        margin=cfg.arcface_margin,
        scale=cfg.arcface_scale,
    )
