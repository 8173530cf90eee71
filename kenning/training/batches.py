"""What a training step reads: augmented images (finetune) or cached pooled features (frozen)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from kenning.config import Config
from kenning.data.images import ImageDataset
from kenning.data.transforms import eval_transform, train_transform
from kenning.embeddings.distributed import Ranks, gather_objects, shard_bounds
from kenning.embeddings.feature_cache import cached_features
from kenning.embeddings.inference import embed_paths
from kenning.embeddings.model import EmbeddingNet, data_config


class ImageBatches:
    """Fine-tuning: augmented images through the whole model; validation embeds the held-out images."""

    def __init__(self, cfg: Config, model: EmbeddingNet, train_df: pd.DataFrame, val_paths: list[str]):
        mean, std = data_config(model)
        self.dataset = ImageDataset(
            train_df["path"].tolist(), train_transform(cfg.model.image_size, mean, std, cfg.train)
        )
        self.plain = eval_transform(cfg.model.image_size, mean, std)
        self.val_paths = val_paths
        self.train_ok = np.ones(len(train_df), dtype=bool)  # unreadable images are skipped batch by batch

    def parameter_groups(self, model: EmbeddingNet, cfg: Config) -> list[dict]:
        return [
            {"params": model.backbone.parameters(), "lr": cfg.train.lr},
            {"params": [*model.pool.parameters(), *model.head.parameters()], "lr": cfg.train.head_lr},
        ]

    def forward(self, model: EmbeddingNet, inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs)

    def validation_vectors(self, model: EmbeddingNet, device: torch.device) -> np.ndarray:
        embedded = embed_paths(model, self.val_paths, self.plain, device=device, progress=False)
        return embedded.vectors if embedded.ok.all() else np.empty((0, model.embedding_dim), dtype=np.float32)


class CachedViews(torch.utils.data.Dataset):
    """Cached pooled features -> one randomly chosen augmented view per draw."""

    def __init__(self, features: np.ndarray):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, None]:
        views = self.features.shape[1] - 1
        view = 1 + int(torch.randint(views, ())) if views else 0
        return torch.from_numpy(self.features[i, view].astype(np.float32)), i, None


class CachedBatches:
    """Frozen backbone: training and validation read pooled features from the disk cache."""

    def __init__(
        self,
        cfg: Config,
        model: EmbeddingNet,
        train_df: pd.DataFrame,
        val_paths: list[str],
        device: torch.device,
        progress: bool,
        ranks: Ranks,
    ):
        tc = cfg.train
        mean, std = data_config(model)
        paths = train_df["path"].tolist() + val_paths
        lo, hi = shard_bounds(len(paths), ranks)  # each rank caches its own slice; all of them train on all
        settings = {
            "image_size": cfg.model.image_size,
            "mean": mean,
            "std": std,
            **{k: getattr(tc, k) for k in ("scale_min", "color_jitter", "hflip", "rotation")},
        }
        shards = gather_objects(
            ranks,
            cached_features(
                model,
                paths[lo:hi],
                eval_transform(cfg.model.image_size, mean, std),
                train_transform(cfg.model.image_size, mean, std, tc),
                tc.cache_views,
                tc.seed,
                tc.cache_dir,
                settings,
                device,
                progress=progress,
                first_position=lo,
            ),
        )
        features = np.concatenate([shard[0] for shard in shards])
        ok = np.concatenate([shard[1] for shard in shards])
        errors = [err for shard in shards for err in shard[2]]
        for err in errors if progress else ():
            tqdm.write(f"warning: skipped {err}", file=sys.stderr)
        n = len(train_df)
        self.train_ok = ok[:n]
        self.dataset = CachedViews(features[:n])
        self.val_features = features[n:] if ok[n:].all() else features[n:n]

    def parameter_groups(self, model: EmbeddingNet, cfg: Config) -> list[dict]:
        return [{"params": model.head.parameters(), "lr": cfg.train.head_lr}]

    def forward(self, model: EmbeddingNet, inputs: torch.Tensor) -> torch.Tensor:
        return model.embed_pooled(inputs)

    @torch.no_grad()
    def validation_vectors(self, model: EmbeddingNet, device: torch.device) -> np.ndarray:
        model.eval()
        plain = torch.from_numpy(self.val_features[:, 0].astype(np.float32)).to(device)
        return model.embed_pooled(plain).cpu().numpy()
