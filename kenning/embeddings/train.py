"""Fine-tune the embedding model on labelled identities with class-balanced P x K batches."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pytorch_metric_learning.samplers import MPerClassSampler
from tqdm import tqdm

from kenning.atomic import atomic_write_json
from kenning.config import Config
from kenning.data.images import ImageDataset, collate_skipping_bad
from kenning.data.readers import UNLABELLED
from kenning.data.transforms import train_transform
from kenning.embeddings.checkpoint import ModelManifest, save_holdout, save_model
from kenning.embeddings.device import select_device
from kenning.embeddings.losses import create_loss
from kenning.embeddings.model import create_model, data_config
from kenning.errors import KenningError


@dataclass
class TrainResult:
    manifest: ModelManifest
    epoch_losses: list[float]
    train_images: int
    holdout_images: int
    skipped_images: int
    seconds: float


def split_holdout(df: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep `fraction` of the identities that have 2+ images out of training, plus unlabelled images.

    The held-out identities play "known" and "new" at build time, to calibrate the unknown threshold
    on identities the model has never seen, as a real catalogue's new arrivals will be.
    """
    labelled = df[df["label"] != UNLABELLED]
    counts = labelled["label"].value_counts()
    candidates = sorted(counts[counts >= 2].index)
    rng = np.random.default_rng(seed)
    n_hold = round(fraction * labelled["label"].nunique()) if fraction > 0 else 0
    n_hold = min(n_hold, max(0, len(candidates) - 2))  # training keeps at least two identities
    held = set(rng.choice(candidates, size=n_hold, replace=False)) if n_hold else set()
    train = labelled[~labelled["label"].isin(held)].reset_index(drop=True)
    holdout = labelled[labelled["label"].isin(held)]
    unlabelled = df[df["label"] == UNLABELLED]
    if len(unlabelled) and n_hold:
        unlabelled = unlabelled.sample(n=min(len(unlabelled), len(holdout)), random_state=seed)
        holdout = pd.concat([holdout, unlabelled])
    return train, holdout.reset_index(drop=True)


def train_embedding(cfg: Config, data: pd.DataFrame, out: str | Path, progress: bool = True) -> TrainResult:
    """Train on the labelled rows of `data` (minus the held-out identities) and save to `out`."""
    start = time.perf_counter()
    tc = cfg.train
    torch.manual_seed(tc.seed)
    train_df, holdout = split_holdout(data, tc.holdout_fraction, tc.seed)
    classes = sorted(train_df["label"].unique())
    if len(classes) < 2:
        raise KenningError(f"training needs at least 2 labelled identities, found {len(classes)}")
    device = select_device(tc.device)
    model = create_model(cfg.model).to(device)
    loss_fn = create_loss(tc, len(classes), model.embedding_dim).to(device)
    losses, skipped = _fit(cfg, model, loss_fn, train_df, classes, device, progress) if tc.epochs > 0 else ([], 0)
    model.cpu().eval()
    save_holdout(out, holdout)
    manifest = save_model(
        out, model, cfg.model, classes, extra_state={"loss": loss_fn.state_dict()}, config=cfg.to_dict()
    )
    result = TrainResult(manifest, losses, len(train_df), len(holdout), skipped, time.perf_counter() - start)
    log = {k: v for k, v in dataclasses.asdict(result).items() if k != "manifest"}
    atomic_write_json(Path(out) / "train_log.json", {**log, "classes": len(classes), "device": str(device)})
    return result


def _fit(
    cfg: Config, model, loss_fn, train_df: pd.DataFrame, classes: list[str], device: torch.device, progress: bool
) -> tuple[list[float], int]:
    tc = cfg.train
    class_index = {c: i for i, c in enumerate(classes)}
    targets = torch.tensor([class_index[c] for c in train_df["label"]])
    per_batch = min(tc.classes_per_batch, len(classes))
    batch_size = per_batch * tc.images_per_class
    sampler = MPerClassSampler(
        targets,
        m=tc.images_per_class,
        batch_size=batch_size,
        length_before_new_iter=max(batch_size, len(targets) // batch_size * batch_size),
    )
    mean, std = data_config(model)
    loader = torch.utils.data.DataLoader(
        ImageDataset(train_df["path"].tolist(), train_transform(cfg.model.image_size, mean, std, tc)),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=tc.num_workers,
        collate_fn=collate_skipping_bad,
        drop_last=True,
    )
    optimizer = torch.optim.AdamW(
        [
            {"params": model.backbone.parameters(), "lr": tc.lr},
            {"params": [*model.pool.parameters(), *model.head.parameters()], "lr": tc.head_lr},
            {"params": loss_fn.parameters(), "lr": tc.loss_lr, "weight_decay": 0.0},
        ],
        weight_decay=tc.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, tc.epochs * len(loader)))
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(enabled=use_amp)
    if use_amp:
        model.to(memory_format=torch.channels_last)
    bad: set[str] = set()
    epoch_losses: list[float] = []
    for epoch in range(tc.epochs):
        model.train()
        total, seen, t0 = 0.0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch", disable=not progress)
        for images, idx, errors in bar:
            for err in set(errors) - bad:
                tqdm.write(f"warning: skipped {err}", file=sys.stderr)
            bad.update(errors)
            if images is None or len(idx) < 2:
                continue
            images = images.to(device, non_blocking=True)
            if use_amp:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = targets[idx].to(device)
            with torch.autocast(device.type, enabled=use_amp):
                loss = loss_fn(model(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            if scaler.get_scale() >= scale:  # fp16 overflow skips the optimiser step: keep the schedule with it
                scheduler.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / seen:.3f}", img_s=f"{seen / (time.perf_counter() - t0):.1f}")
        epoch_losses.append(total / max(seen, 1))
    if bad:
        tqdm.write(f"warning: {len(bad)} training images could not be read and were skipped", file=sys.stderr)
    return epoch_losses, len(bad)
