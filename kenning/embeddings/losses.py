"""Loss factory over pytorch-metric-learning: ArcFace family, triplet and contrastive, alone or combined,
each chosen by name from a registry (`CLASSIFICATION_LOSSES`, `PAIRWISE_LOSSES`, `MINERS`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper
from torch import nn

from kenning.config import LossConfig
from kenning.errors import KenningError


def parse_loss_spec(spec: str) -> dict[str, float]:
    """'subcenter_arcface+triplet:0.5' -> {'subcenter_arcface': 1.0, 'triplet': 0.5}."""
    terms: dict[str, float] = {}
    known = [*CLASSIFICATION_LOSSES, *PAIRWISE_LOSSES]
    for part in spec.replace(" ", "").split("+"):
        name, _, weight = part.partition(":")
        if name not in known:
            raise KenningError(f"unknown loss '{name}' in '{spec}'; choose from {', '.join(known)}")
        if name in terms:
            raise KenningError(f"loss '{name}' appears twice in '{spec}'")
        try:
            terms[name] = float(weight) if weight else 1.0
        except ValueError:
            raise KenningError(f"loss weight '{weight}' in '{spec}' is not a number") from None
    if sum(n in CLASSIFICATION_LOSSES for n in terms) > 1:
        raise KenningError(f"'{spec}' combines two ArcFace losses; use one")
    return terms


def dynamic_margins(class_counts: np.ndarray, margin_min: float, margin_max: float) -> np.ndarray:
    """Per-class margins in degrees: m_c = a * n_c^(-1/4) + b, with a, b mapping the classes onto [min, max].

    The Google Landmark 2020 winners' recipe: rare classes get the large margin (they need the
    tighter cluster most and see the fewest gradients), frequent classes the small one.
    """
    raw = np.asarray(class_counts, dtype=np.float64) ** -0.25
    span = raw.max() - raw.min()
    if span == 0:
        return np.full(len(raw), margin_max)
    a = (margin_max - margin_min) / span
    return a * raw + (margin_min - a * raw.min())


class _PerClassMargin:
    """Mixin for pytorch-metric-learning's ArcFace losses: the margin comes from the target class.

    pytorch-metric-learning takes one scalar margin; this swaps in each sample's class margin for
    the target logit (same formula as its ArcFaceLoss, in torch so it runs on any device).
    """

    class_margins: torch.Tensor

    def compute_loss(self, embeddings, labels, *args):
        self._batch_margins = self.class_margins.to(embeddings)[labels]
        return super().compute_loss(embeddings, labels, *args)

    def modify_cosine_of_target_classes(self, cosine_of_target_classes):
        m = self._batch_margins
        angles = self.get_angles(cosine_of_target_classes)
        return torch.where(angles <= math.pi - m, torch.cos(angles + m), torch.cos(angles) - m * torch.sin(m))


class DynamicArcFaceLoss(_PerClassMargin, losses.ArcFaceLoss):
    pass


class DynamicSubCenterArcFaceLoss(_PerClassMargin, losses.SubCenterArcFaceLoss):
    pass


LossBuilder = Callable[[LossConfig, np.ndarray, int], nn.Module]  # (settings, images per class, embedding size)


def _arcface(plain: type[nn.Module], dynamic: type[nn.Module], *settings: str) -> LossBuilder:
    """A builder of an ArcFace-family loss, with per-class margins when `loss.dynamic_margin`;
    `settings`: the LossConfig fields it takes beyond margin and scale, under the same names."""

    def build(cfg: LossConfig, class_counts: np.ndarray, dim: int) -> nn.Module:
        kwargs = {"num_classes": len(class_counts), "embedding_size": dim, "margin": cfg.margin, "scale": cfg.scale}
        kwargs.update({key: getattr(cfg, key) for key in settings})
        if not cfg.dynamic_margin:
            return plain(**kwargs)
        loss = dynamic(**kwargs)
        margins = np.radians(dynamic_margins(class_counts, cfg.margin_min, cfg.margin_max))
        loss.register_buffer("class_margins", torch.tensor(margins, dtype=torch.float32))
        return loss

    return build


# name -> builder: a new loss is one builder (and its settings in LossConfig) and one line here.
# Classification losses own per-class parameters (and only one of them may be in a mix); pairwise
# ones take the miner's pairs or triplets.
CLASSIFICATION_LOSSES: dict[str, LossBuilder] = {
    "arcface": _arcface(losses.ArcFaceLoss, DynamicArcFaceLoss),
    "subcenter_arcface": _arcface(losses.SubCenterArcFaceLoss, DynamicSubCenterArcFaceLoss, "sub_centers"),
}
PAIRWISE_LOSSES: dict[str, LossBuilder] = {
    "triplet": lambda cfg, counts, dim: losses.TripletMarginLoss(margin=cfg.triplet_margin),
    # Siamese pairs; triplets from a miner are split into their pairs
    "contrastive": lambda cfg, counts, dim: losses.ContrastiveLoss(
        pos_margin=cfg.pos_margin, neg_margin=cfg.neg_margin
    ),
}
MINERS: dict[str, Callable[[LossConfig], nn.Module | None]] = {
    "batch_hard": lambda cfg: miners.BatchHardMiner(),
    "multi_similarity": lambda cfg: miners.MultiSimilarityMiner(),
    "semihard": lambda cfg: miners.TripletMarginMiner(margin=cfg.triplet_margin, type_of_triplets="semihard"),
    "none": lambda cfg: None,
}


def create_miner(cfg: LossConfig) -> nn.Module | None:
    return MINERS[cfg.miner](cfg)


def create_loss(
    cfg: LossConfig, class_counts: np.ndarray, embedding_dim: int, distributed: bool = False
) -> losses.MultipleLosses:
    """One module for any combination: loss(embeddings, labels) -> weighted sum, each pairwise term mined.

    `class_counts[c]` is the number of training images of class c (dynamic margins use it).
    `distributed`: pairwise terms and their miners see the whole global batch (every rank's
    embeddings, gathered); ArcFace terms stay per sample on the rank's own batch, their class centres
    kept in sync by DDP's gradient averaging like any weight.
    """
    terms = parse_loss_spec(cfg.name)
    built: dict[str, nn.Module] = {}
    mined: dict[str, nn.Module] = {}
    for name in terms:
        if name in CLASSIFICATION_LOSSES:
            built[name] = CLASSIFICATION_LOSSES[name](cfg, class_counts, embedding_dim)
            continue
        built[name] = PAIRWISE_LOSSES[name](cfg, class_counts, embedding_dim)
        miner = create_miner(cfg)
        if distributed:
            built[name] = DistributedLossWrapper(built[name])
        if miner is not None:
            mined[name] = DistributedMinerWrapper(miner) if distributed else miner
    return losses.MultipleLosses(built, miners=mined or None, weights=terms)
