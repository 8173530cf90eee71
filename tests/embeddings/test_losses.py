import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses

from kenning.config import LossConfig
from kenning.embeddings.losses import DynamicArcFaceLoss, create_loss, dynamic_margins, parse_loss_spec
from kenning.errors import KenningError


def test_loss_spec_parses_names_and_weights() -> None:
    assert parse_loss_spec("arcface") == {"arcface": 1.0}
    assert parse_loss_spec("subcenter_arcface + triplet:0.5") == {"subcenter_arcface": 1.0, "triplet": 0.5}
    for bad, message in [
        ("softmax", "unknown loss"),
        ("triplet+triplet", "twice"),
        ("triplet:x", "not a number"),
        ("arcface+subcenter_arcface", "two ArcFace"),
    ]:
        with pytest.raises(KenningError, match=message):
            parse_loss_spec(bad)


def test_dynamic_margins_grow_for_rarer_classes_within_bounds() -> None:
    counts = np.array([100, 1, 10, 3])
    margins = dynamic_margins(counts, 10.0, 30.0)
    assert margins[1] == pytest.approx(30.0) and margins[0] == pytest.approx(10.0)
    order = np.argsort(counts)  # rarest first
    assert np.all(np.diff(margins[order]) < 0)
    # m = a * n^(-1/4) + b: linear in n^(-1/4)
    raw = counts.astype(float) ** -0.25
    assert np.allclose(np.polyfit(raw, margins, 1)[0] * raw + np.polyfit(raw, margins, 1)[1], margins)
    assert np.allclose(dynamic_margins(np.array([5, 5]), 10.0, 30.0), 30.0)


def test_per_class_margin_equal_margins_match_arcface() -> None:
    torch.manual_seed(0)
    plain = losses.ArcFaceLoss(num_classes=5, embedding_size=8, margin=20.0, scale=30.0)
    dynamic = DynamicArcFaceLoss(num_classes=5, embedding_size=8, margin=20.0, scale=30.0)
    dynamic.W.data.copy_(plain.W.data)
    dynamic.register_buffer("class_margins", torch.full((5,), float(np.radians(20.0))))
    emb = torch.nn.functional.normalize(torch.randn(12, 8), dim=-1)
    labels = torch.randint(0, 5, (12,))
    assert torch.allclose(plain(emb, labels), dynamic(emb, labels), atol=1e-5)
    dynamic.class_margins[labels[0]] += 0.3  # a larger margin for one sample's class costs more
    assert dynamic(emb, labels) > plain(emb, labels)


@pytest.mark.parametrize(
    "spec,miner,dynamic",
    [
        ("arcface", "none", False),
        ("subcenter_arcface", "none", True),
        ("triplet", "batch_hard", False),
        ("triplet", "multi_similarity", False),
        ("contrastive", "semihard", False),
        ("subcenter_arcface+triplet:0.5", "batch_hard", True),
    ],
)
def test_every_loss_gives_a_gradient_and_its_state_round_trips(spec: str, miner: str, dynamic: bool) -> None:
    cfg = LossConfig(name=spec, miner=miner, dynamic_margin=dynamic)
    counts = np.array([4, 1, 2, 8])
    loss_fn = create_loss(cfg, counts, 16)
    emb = torch.randn(8, 16, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    value = loss_fn(torch.nn.functional.normalize(emb, dim=-1), labels)
    value.backward()
    assert torch.isfinite(value) and emb.grad is not None and emb.grad.abs().sum() > 0
    again = create_loss(cfg, counts, 16)
    again.load_state_dict(loss_fn.state_dict())
    for (name, a), (_, b) in zip(loss_fn.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    has_centres = "arcface" in spec
    assert (sum(p.numel() for p in loss_fn.parameters()) > 0) == has_centres


def test_the_registries_are_what_the_config_accepts() -> None:
    """A loss or miner added to its registry is one the config and the CLI accept, and no other."""
    from kenning.config import CHOICES
    from kenning.embeddings.losses import CLASSIFICATION_LOSSES, MINERS, PAIRWISE_LOSSES

    assert set(MINERS) == set(CHOICES["loss.miner"])
    for name in [*CLASSIFICATION_LOSSES, *PAIRWISE_LOSSES]:
        assert parse_loss_spec(name) == {name: 1.0}
