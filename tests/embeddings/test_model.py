from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from kenning.config import ModelConfig
from kenning.embeddings.model import GeM, create_model
from kenning.embeddings.pretrained import load_backbone_weights, packaged_weights_path
from kenning.errors import KenningError


def test_gem_with_p1_is_average_pooling() -> None:
    x = torch.rand(2, 5, 4, 4)
    assert torch.allclose(GeM(p=1.0)(x), F.adaptive_avg_pool2d(x, 1).flatten(1), atol=1e-6)
    assert (GeM(p=20.0)(x) <= x.amax(dim=(-2, -1)) + 1e-5).all()


def test_embeddings_are_normalised_with_and_without_head() -> None:
    x = torch.rand(2, 3, 64, 64)
    for dim, expected in ((32, 32), (0, 1280)):
        model = create_model(ModelConfig(pretrained=False, embedding_dim=dim)).eval()
        out = model(x)
        assert out.shape == (2, expected)
        assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_packaged_imagenet_weights_map_in_order() -> None:
    model = create_model(ModelConfig(embedding_dim=0))
    packaged = torch.load(packaged_weights_path("tf_efficientnet_lite0"), map_location="cpu")
    assert torch.equal(model.backbone.conv_stem.weight, packaged["_conv_stem.weight"])
    assert torch.equal(model.backbone.bn2.running_var, packaged["_bn1.running_var"])


def test_any_local_checkpoint_loads(tmp_path: Path) -> None:
    source = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "ckpt.pth")
    model = create_model(ModelConfig(weights=str(tmp_path / "ckpt.pth"), embedding_dim=0))
    assert torch.equal(model.backbone.conv_stem.weight, source.conv_stem.weight)


def test_bad_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    backbone = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0, global_pool="")
    with pytest.raises(KenningError, match="cannot read weights"):
        load_backbone_weights(backbone, "tf_efficientnet_lite0", tmp_path / "junk.pth")
    with pytest.raises(KenningError, match="weights file not found"):
        load_backbone_weights(backbone, "tf_efficientnet_lite0", tmp_path / "none.pth")
    other = timm.create_model("resnet18", pretrained=False)
    torch.save(other.state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(KenningError, match="do not fit backbone"):
        load_backbone_weights(backbone, "tf_efficientnet_lite0", tmp_path / "resnet.pth")


def test_backbone_without_offline_weights_or_unknown() -> None:
    with pytest.raises(KenningError, match="no offline ImageNet weights for 'resnet18'"):
        create_model(ModelConfig(backbone="resnet18"))
    assert create_model(ModelConfig(backbone="resnet18", pretrained=False, embedding_dim=8)).embedding_dim == 8
    with pytest.raises(KenningError, match="timm has no such model"):
        create_model(ModelConfig(backbone="no_such_net", pretrained=False))
