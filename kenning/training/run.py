"""Train the embedding: split off held-out identities, build the model and loss, fit, save the best epoch."""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kenning.atomic import atomic_write_json
from kenning.config import Config
from kenning.data.readers import UNLABELLED, read_dataset, select_split
from kenning.data.splits import sighting_key
from kenning.embeddings import training_state as ts
from kenning.embeddings.checkpoint import ModelManifest, is_model_dir, save_holdout, save_model
from kenning.embeddings.device import select_device
from kenning.embeddings.distributed import Ranks, from_main, process_group
from kenning.embeddings.losses import create_loss
from kenning.embeddings.model import EmbeddingNet, check_backbone, create_model
from kenning.embeddings.sampling import apply_small_class_policy
from kenning.errors import KenningError
from kenning.paths import require_output_dir
from kenning.training.batches import CachedBatches, ImageBatches
from kenning.training.fit import Fit


@dataclass
class TrainResult:
    manifest: ModelManifest
    history: list[dict[str, float]]  # one row per epoch: loss, validation figures, seconds
    best_epoch: int | None  # the epoch whose weights were saved (None: no epochs)
    train_images: int
    holdout_images: int
    skipped_images: int
    seconds: float
    resumed_from: int = 0  # epochs already done when this call started

    @property
    def epoch_losses(self) -> list[float]:
        return [row["loss"] for row in self.history]

    @property
    def validation(self) -> dict[str, float]:
        """The best epoch's figures on the held-out identities (empty without them)."""
        best = next((row for row in self.history if row["epoch"] == self.best_epoch), {})
        return {k: v for k, v in best.items() if k not in ("epoch", "loss", "seconds")}


def split_holdout(df: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep `fraction` of the identities that have 2+ images out of training, plus unlabelled images.

    The held-out identities validate each epoch, and at build time play "known" and "new" to
    calibrate the unknown threshold on identities the model has never seen, as a real
    catalogue's new arrivals will be.
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


def train_embedding(
    cfg: Config, data: pd.DataFrame, out: str | Path, progress: bool = True, resume: bool = False
) -> TrainResult:
    """Train on the labelled rows of `data` (minus the held-out identities) and save the best epoch to `out`.

    `out/checkpoints/last.pt` is written after every epoch; with `resume`, a killed run continues
    from it and ends with the same weights an uninterrupted run would have. Under torchrun, every
    process calls this and gets the same result; only rank 0 writes to `out`.
    """
    out = Path(out)
    with process_group(cfg.train.device) as ranks, ts.training_run(out) if ranks.is_main else nullcontext():
        return _train(cfg, data, out, progress and ranks.is_main, resume, ranks)


def training_table(cfg: Config, data: str | Path, split: str, out: str | Path) -> pd.DataFrame:
    """`train-embed`'s checks before any process starts or folder is made: a model folder (or a new
    one) to write, an offline backbone (a hub name would download), a readable dataset split."""
    require_output_dir(out, "model folder", is_model_dir)
    check_backbone(cfg.model.backbone)
    return select_split(read_dataset(data), split)


def resolve_mode(cfg: Config, device: torch.device) -> Config:
    """`train.mode: auto` -> finetune on CUDA, frozen on a CPU (where fine-tuning takes hours)."""
    if cfg.train.mode != "auto":
        return cfg
    mode = "finetune" if device.type == "cuda" else "frozen"
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, mode=mode))


def _train(cfg: Config, data: pd.DataFrame, out: Path, progress: bool, resume: bool, ranks: Ranks) -> TrainResult:
    start = time.perf_counter()
    device = select_device(cfg.train.device, ranks.local_rank, ranks.local_world)
    cfg = resolve_mode(cfg, device)
    tc = cfg.train
    last = from_main(ranks, lambda: _resumable(out, cfg, resume))
    ts.seed_everything(tc.seed)
    train_df, holdout = split_holdout(data, tc.holdout_fraction, tc.seed)
    train_df = apply_small_class_policy(train_df, tc.images_per_class, tc.small_classes)
    validation = holdout[holdout["label"] != UNLABELLED].reset_index(drop=True)
    model = create_model(cfg.model)
    if tc.mode == "frozen" and tc.epochs > 0:  # nothing to train: no features to cache
        model.to(device)
        source: ImageBatches | CachedBatches = CachedBatches(
            cfg, model, train_df, validation["path"].tolist(), device, progress, ranks
        )
        model.backbone.requires_grad_(False)
        model.pool.requires_grad_(False)
    else:
        source = ImageBatches(cfg, model, train_df, validation["path"].tolist())
    classes = sorted(train_df.loc[source.train_ok, "label"].unique())
    if len(classes) < 2:
        raise KenningError(f"training needs at least 2 labelled identities, found {len(classes)}")
    class_index = {c: i for i, c in enumerate(classes)}
    targets = torch.tensor([class_index.get(c, -1) for c in train_df["label"]])
    counts = np.bincount(targets[torch.from_numpy(source.train_ok)].numpy(), minlength=len(classes))
    loss_fn = create_loss(cfg.loss, counts, model.embedding_dim, distributed=ranks.active)
    model.to(device)
    loss_fn.to(device)
    if ranks.active:  # the same initial weights everywhere (DDP checks), then each rank its own augmentations
        ts.seed_everything(tc.seed + ranks.rank)

    sightings = [  # protocol A: a held-out image is not matched against its own sighting
        (lab, sighting_key(i)) for lab, i in zip(validation["label"], validation["image_id"], strict=True)
    ]
    fit = Fit(cfg, model, loss_fn, source, targets, validation["label"].tolist(), sightings, device, progress, ranks)
    resumed_from = fit.restore(last) if last is not None else 0
    fit.run(out, resumed_from)
    return from_main(
        ranks, lambda: _save(out, cfg, model, loss_fn, fit, source, holdout, classes, device, start, resumed_from)
    )


def _save(
    out: Path,
    cfg: Config,
    model: EmbeddingNet,
    loss_fn: torch.nn.Module,
    fit: Fit,
    source: ImageBatches | CachedBatches,
    holdout: pd.DataFrame,
    classes: list[str],
    device: torch.device,
    start: float,
    resumed_from: int,
) -> TrainResult:
    """The model directory from the best epoch, and the training log (rank 0)."""
    best = ts.load_state(out, ts.BEST)
    if best is not None:
        model.load_state_dict(best["model"])
        loss_fn.load_state_dict(best["loss"])
    model.cpu().eval()
    save_holdout(out, holdout)
    manifest = save_model(
        out,
        model,
        cfg.model,
        classes,
        extra_state={"loss": loss_fn.state_dict(), "epoch": fit.best_epoch},
        config=cfg.to_dict(),
    )
    result = TrainResult(
        manifest=manifest,
        history=fit.history,
        best_epoch=fit.best_epoch,
        train_images=int(source.train_ok.sum()),
        holdout_images=len(holdout),
        skipped_images=int((~source.train_ok).sum()) + len(fit.bad),
        seconds=time.perf_counter() - start,
        resumed_from=resumed_from,
    )
    atomic_write_json(
        out / "train_log.json",
        {
            "history": result.history,
            "epoch_losses": result.epoch_losses,
            "best_epoch": result.best_epoch,
            "validation": result.validation,
            "train_images": result.train_images,
            "holdout_images": result.holdout_images,
            "skipped_images": result.skipped_images,
            "seconds": result.seconds,
            "resumed_from": resumed_from,
            "classes": len(classes),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "processes": fit.ranks.world,
            "images_per_epoch": len(fit.sampler) * fit.ranks.world,  # drawn by all processes together
        },
    )
    return result


def _resumable(out: Path, cfg: Config, resume: bool) -> dict | None:
    """The last checkpoint in `out` when this run may continue it (refusals otherwise)."""
    last = ts.load_state(out, ts.LAST)
    _check_resume(last, cfg, resume, out)
    return last


def _check_resume(last: dict | None, cfg: Config, resume: bool, out: Path) -> None:
    if last is None:
        return
    unfinished = last["epoch"] < last["config"]["train"]["epochs"]
    if not resume:
        if unfinished:
            raise KenningError(
                f"{out} holds an unfinished run (epoch {last['epoch']} of {last['config']['train']['epochs']}): "
                "add --resume to continue it, or choose another --out"
            )
        return
    changed = ts.config_differences(last["config"], cfg.to_dict())
    if changed:
        raise KenningError(f"cannot resume {out}: the config differs in {', '.join(changed)}")
