"""A timm backbone, GeM pooling and a linear+BN head: image -> L2-normalised embedding."""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from kenning.config import ModelConfig
from kenning.embeddings.pretrained import load_backbone_weights
from kenning.errors import KenningError


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent.

    Written here because timm's pooling factory has no GeM; it is the standard choice for
    instance retrieval (Radenovic et al., 2018): p=1 is average pooling, large p tends to max.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)


class EmbeddingNet(nn.Module):
    def __init__(self, backbone: nn.Module, embedding_dim: int, gem_p: float):
        super().__init__()
        self.backbone = backbone
        self.pool = GeM(gem_p)
        features = backbone.num_features
        if embedding_dim > 0:
            self.head: nn.Module = nn.Sequential(
                nn.Linear(features, embedding_dim, bias=False), nn.BatchNorm1d(embedding_dim)
            )
            self.embedding_dim = embedding_dim
        else:  # the pooled backbone features are the embedding (the untrained baseline)
            self.head = nn.Identity()
            self.embedding_dim = features

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> pooled backbone features (what the frozen-backbone mode caches)."""
        return self.pool(self.backbone.forward_features(x))

    def embed_pooled(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features -> L2-normalised embedding."""
        return F.normalize(self.head(features), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_pooled(self.pooled(x))


def check_backbone(name: str) -> str:
    """`name` when timm knows it locally. Hub names (hf-hub:..., timm/...) would fetch code or weights
    over the network, which Kenning never does; anything else is a typo."""
    if not isinstance(name, str) or not timm.is_model(name):
        text = str(name)
        why = "timm has no such model"
        if ":" in text or text.startswith(("timm/", "hf_hub", "hf-hub")):
            why = "hub models are downloaded, and Kenning downloads nothing"
        elif "/" in text or "\\" in text or text.startswith("."):
            why = "it is a path, not a model name (a local checkpoint goes in --weights)"
        raise KenningError(f"backbone {str(name)[:100]!r} is refused: {why}; use a name from timm.list_models()")
    return name


def create_model(cfg: ModelConfig, load_weights: bool = True) -> EmbeddingNet:
    """Build the model; with `load_weights`, initialise the backbone from cfg.weights or packaged ImageNet weights."""
    check_backbone(cfg.backbone)
    try:
        backbone = timm.create_model(cfg.backbone, pretrained=False, num_classes=0, global_pool="")
    except (RuntimeError, ValueError, TypeError) as exc:  # timm: "Unknown model (...)", bad arguments
        raise KenningError(f"cannot build timm backbone '{cfg.backbone}': {str(exc).splitlines()[0]}") from None
    if load_weights and (cfg.pretrained or cfg.weights):
        load_backbone_weights(backbone, cfg.backbone, cfg.weights)
    return EmbeddingNet(backbone, cfg.embedding_dim, cfg.gem_p)


def data_config(model: EmbeddingNet) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation mean and std the backbone was trained with."""
    cfg = timm.data.resolve_data_config({}, model=model.backbone)
    return tuple(cfg["mean"]), tuple(cfg["std"])
