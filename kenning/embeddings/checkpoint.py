"""The model directory: `model.pt` (weights) + `manifest.json` (what is needed to use them) + held-out set."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from kenning.atomic import atomic_save, atomic_write_json
from kenning.config import ModelConfig, check_value
from kenning.embeddings.model import EmbeddingNet, check_backbone, create_model
from kenning.errors import KenningError
from kenning.manifests import read_manifest as read_json_manifest
from kenning.paths import holds_only, require_file

FORMAT = "kenning-model/1"
WEIGHTS = "model.pt"
MANIFEST = "manifest.json"
HOLDOUT = "holdout.csv"


@dataclass
class ModelManifest:
    backbone: str
    image_size: int
    mean: list[float]
    std: list[float]
    embedding_dim: int  # 0 in the config means "no head"; here it is the real output size
    head_dim: int
    gem_p: float
    fingerprint: str  # hash of the weights: an index refuses queries from any other model
    classes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT


def fingerprint(model: nn.Module) -> str:
    """Hash of a module's weights (the whole model, or a part such as its backbone)."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_model(
    out: str | Path,
    model: EmbeddingNet,
    cfg: ModelConfig,
    classes: list[str],
    extra_state: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> ModelManifest:
    """Write weights then manifest, each atomically; the manifest (written last) commits the save."""
    from kenning.embeddings.model import data_config

    out = Path(out)
    mean, std = data_config(model)
    manifest = ModelManifest(
        backbone=cfg.backbone,
        image_size=cfg.image_size,
        mean=list(mean),
        std=list(std),
        embedding_dim=model.embedding_dim,
        head_dim=cfg.embedding_dim,
        gem_p=cfg.gem_p,
        fingerprint=fingerprint(model),
        classes=classes,
        config=config or {},
    )
    payload = {"model": model.state_dict(), **(extra_state or {})}
    atomic_save(out / WEIGHTS, lambda p: torch.save(payload, p))
    atomic_write_json(out / MANIFEST, dataclasses.asdict(manifest))
    return manifest


def read_manifest(model_dir: str | Path) -> ModelManifest:
    """The model's manifest, every value checked: a tampered one is refused in one line before it
    sizes a tensor or normalises an image (image_size 100000 would allocate gigabytes)."""
    path = Path(model_dir) / MANIFEST
    manifest = read_json_manifest(path, ModelManifest, FORMAT, "model")
    try:
        check_backbone(manifest.backbone)
        check_value("model.image_size", manifest.image_size)
        check_value("model.gem_p", manifest.gem_p)
        if len(manifest.mean) != 3 or len(manifest.std) != 3:
            raise KenningError("mean and std need one value per colour channel (3)")
        if not all(0 < s <= 10 for s in manifest.std) or not all(-10 <= m <= 10 for m in manifest.mean):
            raise KenningError(f"normalisation mean {manifest.mean} / std {manifest.std} is out of range")
        if not 1 <= manifest.embedding_dim <= 65_536 or not 0 <= manifest.head_dim <= 65_536:
            raise KenningError(f"embedding_dim {manifest.embedding_dim} / head_dim {manifest.head_dim} out of range")
    except KenningError as exc:
        raise KenningError(f"{path} is damaged: {exc}") from None
    return manifest


def load_model(model_dir: str | Path) -> tuple[EmbeddingNet, ModelManifest]:
    """Load weights and check them against the manifest's fingerprint."""
    manifest = read_manifest(model_dir)
    cfg = ModelConfig(
        backbone=manifest.backbone,
        pretrained=False,
        embedding_dim=manifest.head_dim,
        gem_p=manifest.gem_p,
        image_size=manifest.image_size,
    )
    model = create_model(cfg, load_weights=False)
    weights = Path(model_dir) / WEIGHTS
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
    except FileNotFoundError:
        raise KenningError(f"model weights missing: {weights}") from None
    except Exception as exc:  # a corrupt or foreign file surfaces as many exception types
        raise KenningError(f"cannot load model weights {weights}: {str(exc).splitlines()[0]}") from None
    if fingerprint(model) != manifest.fingerprint:
        raise KenningError(f"{weights} does not match its manifest (fingerprint differs): re-run train-embed")
    model.eval()
    return model, manifest


# What train-embed writes into a model folder; a folder holding anything else is not one of Kenning's.
MODEL_FILES = {WEIGHTS, MANIFEST, HOLDOUT, "train_log.json", "training_curves.png", "checkpoints", "train.lock"}


def is_model_dir(directory: Path) -> bool:
    """A model folder (its manifest must read as one), or one holding only what training writes."""
    if (directory / MANIFEST).exists():
        read_manifest(directory)  # a foreign or damaged manifest is refused, by name
        return True
    return holds_only(directory, MODEL_FILES)


def save_holdout(out: str | Path, table: pd.DataFrame) -> None:
    """`path` relative to the model directory (so model and data moved together still work) and
    `source_path` absolute (so the model directory moved alone still finds the data)."""
    root = Path(out).resolve()
    absolute = [os.path.abspath(p) for p in table["path"]]
    table = table.assign(path=[os.path.relpath(p, root) for p in absolute], source_path=absolute)
    atomic_save(Path(out) / HOLDOUT, lambda p: table.to_csv(p, index=False))


def load_holdout(model_dir: str | Path) -> pd.DataFrame | None:
    """Images of training identities the model never saw, kept to calibrate the unknown threshold;
    paths resolved from wherever Kenning runs."""
    path = Path(model_dir) / HOLDOUT
    if not path.exists():
        return None
    table = pd.read_csv(require_file(path, "held-out list"), dtype=str, keep_default_na=False)
    if "source_path" not in table:  # written before paths were relative to the model directory
        return table
    root = Path(model_dir).resolve()
    here = [os.path.normpath(root / rel) for rel in table["path"]]
    paths = [h if os.path.exists(h) else src for h, src in zip(here, table["source_path"], strict=True)]
    return table.assign(path=paths).drop(columns="source_path")
