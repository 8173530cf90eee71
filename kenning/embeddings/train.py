"""Train the embedding on labelled identities: P x K batches, any loss mix, validation, checkpoints, resume.

Two modes share one loop. `finetune` trains backbone, head and loss on augmented images.
`frozen` caches the backbone's pooled features once (feature_cache) and trains only the head and
the loss on them: minutes on a CPU instead of hours, and the same model directory at the end.
`auto` (the default) fine-tunes on CUDA and freezes on a CPU.

Under torchrun the same loop runs in every process (distributed.py): DDP averages the gradients
of the model and the loss's class centres, each rank draws its own classes per step, pairwise
losses see the gathered global batch, the frozen-mode cache is computed in shards by rank, and
rank 0 alone validates and writes.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from kenning.atomic import atomic_write_json
from kenning.config import Config
from kenning.data.images import ImageDataset, collate_skipping_bad
from kenning.data.readers import UNLABELLED
from kenning.data.splits import sighting_key
from kenning.data.transforms import eval_transform, train_transform
from kenning.embeddings import training_state as ts
from kenning.embeddings.checkpoint import ModelManifest, save_holdout, save_model
from kenning.embeddings.device import select_device
from kenning.embeddings.distributed import Ranks, from_main, gather_objects, process_group, shard_bounds, sum_over_ranks
from kenning.embeddings.feature_cache import cached_features
from kenning.embeddings.inference import embed_paths
from kenning.embeddings.losses import create_loss
from kenning.embeddings.model import EmbeddingNet, create_model, data_config
from kenning.embeddings.sampling import DistributedPKSampler, apply_small_class_policy, create_sampler
from kenning.errors import KenningError
from kenning.eval.plots import plot_training_curves
from kenning.eval.retrieval import leave_one_out

CURVES = "training_curves.png"


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


class _ImageBatches:
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


class _CachedViews(torch.utils.data.Dataset):
    """Cached pooled features -> one randomly chosen augmented view per draw."""

    def __init__(self, features: np.ndarray):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, None]:
        views = self.features.shape[1] - 1
        view = 1 + int(torch.randint(views, ())) if views else 0
        return torch.from_numpy(self.features[i, view].astype(np.float32)), i, None


class _CachedBatches:
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
        self.dataset = _CachedViews(features[:n])
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
        source: _ImageBatches | _CachedBatches = _CachedBatches(
            cfg, model, train_df, validation["path"].tolist(), device, progress, ranks
        )
        model.backbone.requires_grad_(False)
        model.pool.requires_grad_(False)
    else:
        source = _ImageBatches(cfg, model, train_df, validation["path"].tolist())
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
    fit = _Fit(cfg, model, loss_fn, source, targets, validation["label"].tolist(), sightings, device, progress, ranks)
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
    fit: _Fit,
    source: _ImageBatches | _CachedBatches,
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


class _Objective(torch.nn.Module):
    """Model and loss as one module, so that DDP averages the gradients of both (the ArcFace class
    centres included) and the step is one call either way."""

    def __init__(self, model: EmbeddingNet, loss_fn: torch.nn.Module, forward) -> None:
        super().__init__()
        self.model, self.loss_fn, self.embed = model, loss_fn, forward

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.embed(self.model, inputs).float(), labels)


class _Fit:
    """The epoch loop and the state it checkpoints."""

    def __init__(
        self,
        cfg: Config,
        model: EmbeddingNet,
        loss_fn: torch.nn.Module,
        source: _ImageBatches | _CachedBatches,
        targets: torch.Tensor,
        val_labels: list[str],
        val_sightings: list[object],
        device: torch.device,
        progress: bool,
        ranks: Ranks,
    ):
        tc = cfg.train
        self.ranks = ranks
        self.val_sightings = val_sightings
        self.cfg, self.model, self.loss_fn, self.source = cfg, model, loss_fn, source
        self.targets, self.val_labels, self.device, self.progress = targets, val_labels, device, progress
        usable = np.flatnonzero(source.train_ok & (targets.numpy() >= 0))
        self.sampler = create_sampler(targets[usable], tc.classes_per_batch, tc.images_per_class, ranks, tc.seed)
        self.loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(source.dataset, usable.tolist()),
            batch_size=self.sampler.batch_size,
            sampler=self.sampler,
            num_workers=tc.num_workers,
            collate_fn=collate_skipping_bad,
            drop_last=True,
        )
        self.optimizer = torch.optim.AdamW(
            [
                *source.parameter_groups(model, cfg),
                {"params": loss_fn.parameters(), "lr": tc.loss_lr, "weight_decay": 0.0},
            ],
            weight_decay=tc.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, tc.epochs * len(self.loader))
        )
        self.use_amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler(enabled=self.use_amp)
        if self.use_amp and isinstance(source, _ImageBatches):
            model.to(memory_format=torch.channels_last)
        objective = _Objective(model, loss_fn, source.forward)
        self.step: torch.nn.Module = objective
        if ranks.active:
            self.step = torch.nn.parallel.DistributedDataParallel(
                objective, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.history: list[dict[str, float]] = []
        self.best_epoch: int | None = None
        self.best_score = -math.inf
        self.bad: set[str] = set()

    def restore(self, last: dict) -> int:
        self.model.load_state_dict(last["model"])
        self.loss_fn.load_state_dict(last["loss"])
        self.optimizer.load_state_dict(last["optimizer"])
        self.scheduler.load_state_dict(last["scheduler"])
        self.scaler.load_state_dict(last["scaler"])
        self.history, self.best_epoch, self.best_score = last["history"], last["best_epoch"], last["best_score"]
        # MPerClassSampler shuffles its class list in place, epoch after epoch; the distributed sampler
        # draws from (seed, epoch) alone and saves none (a run resumed with another process count)
        if not isinstance(self.sampler, DistributedPKSampler) and last["sampler_classes"]:
            self.sampler.labels = list(last["sampler_classes"])
        by_rank = last.get("rng_by_rank") or []
        ts.restore_rng(by_rank[self.ranks.rank] if len(by_rank) == self.ranks.world else last["rng"])
        if self.progress:
            tqdm.write(f"resuming after epoch {last['epoch']}", file=sys.stderr)
        return int(last["epoch"])

    def run(self, out: Path, first_epoch: int) -> None:
        epochs = self.cfg.train.epochs
        for epoch in range(first_epoch + 1, epochs + 1):
            t0 = time.perf_counter()
            loss = self._train_one_epoch(epoch)
            rng_by_rank = gather_objects(self.ranks, ts.capture_rng()) if self.ranks.active else []
            if not self.ranks.is_main:  # rank 0 validates, chooses the best epoch and writes
                continue
            row = {"epoch": epoch, "loss": loss, **self._validate(), "seconds": time.perf_counter() - t0}
            self.history.append(row)
            score = row.get(self.cfg.train.select_by, math.nan)
            if math.isnan(score) or score > self.best_score:  # no validation set: the last epoch is the best
                self.best_epoch, self.best_score = epoch, -math.inf if math.isnan(score) else score
                ts.save_state(
                    out,
                    ts.BEST,
                    {"epoch": epoch, "model": self.model.state_dict(), "loss": self.loss_fn.state_dict()},
                )
            ts.save_state(out, ts.LAST, {**self._state(epoch), "rng_by_rank": rng_by_rank})
            plot_training_curves(self.history, out / CURVES, self.best_epoch)
            if self.progress:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "seconds"))
                tqdm.write(f"epoch {epoch}/{epochs}: {shown} ({row['seconds']:.0f}s)", file=sys.stderr)
        if self.bad and self.progress:
            tqdm.write(f"warning: {len(self.bad)} training images could not be read and were skipped", file=sys.stderr)

    def _train_one_epoch(self, epoch: int) -> float:
        self.model.train()
        if isinstance(self.sampler, DistributedPKSampler):
            self.sampler.set_epoch(epoch)
        total, seen, t0 = 0.0, 0, time.perf_counter()
        bar = tqdm(self.loader, desc=f"epoch {epoch}/{self.cfg.train.epochs}", unit="batch", disable=not self.progress)
        for inputs, positions, errors in bar:
            for err in set(errors) - self.bad:
                tqdm.write(f"warning: skipped {err}", file=sys.stderr)
            self.bad.update(errors)
            if self.ranks.active:
                inputs, positions = self._full_batch(inputs, positions)
            if inputs is None or len(positions) < 2:
                continue
            inputs = inputs.to(self.device, non_blocking=True)
            if self.use_amp and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            labels = self.targets[positions].to(self.device)  # positions index the whole table
            with torch.autocast(self.device.type, enabled=self.use_amp):
                loss = self.step(inputs, labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scaler.get_scale() >= scale:  # fp16 overflow skips the optimiser step: keep the schedule with it
                self.scheduler.step()
            total += loss.item() * len(positions)
            seen += len(positions)
            elapsed = time.perf_counter() - t0
            bar.set_postfix(
                loss=f"{total / seen:.3f}",
                img_s=f"{seen * self.ranks.world / elapsed:.1f}",
                run_left=_clock(self._seconds_left(epoch, elapsed, bar.n + 1)),
            )
        total, seen = sum_over_ranks(self.ranks, total, seen)
        return total / max(seen, 1)

    def _full_batch(
        self, inputs: torch.Tensor | None, positions: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Every rank's batch must keep its size (pairwise losses gather them): images that could not
        be read are replaced by repeats of readable ones of the same batch."""
        if inputs is None:
            raise KenningError("no image of a whole training batch could be read; fix or remove the unreadable images")
        missing = self.sampler.batch_size - len(positions)
        if missing <= 0:
            return inputs, positions
        fill = torch.arange(missing) % len(positions)
        return torch.cat([inputs, inputs[fill]]), torch.cat([positions, positions[fill]])

    def _seconds_left(self, epoch: int, elapsed: float, batches_done: int) -> float:
        """The run's remaining time: this epoch's rest at its own pace, later epochs at the pace of the
        finished ones (validation included), or this one's while none has finished."""
        this_epoch = elapsed / batches_done * len(self.loader)
        finished = [row["seconds"] for row in self.history]
        per_epoch = sum(finished) / len(finished) if finished else this_epoch
        return max(0.0, this_epoch - elapsed) + (self.cfg.train.epochs - epoch) * per_epoch

    def _validate(self) -> dict[str, float]:
        if len(self.val_labels) < 2:
            return {}
        vectors = self.source.validation_vectors(self.model, self.device)
        if len(vectors) != len(self.val_labels):  # a held-out image could not be read
            return {}
        metrics = leave_one_out(vectors, self.val_labels, groups=self.val_sightings)
        return {k: metrics[k] for k in ("recall@1", "recall@5", "map@5", "map@r")}

    def _state(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "rng": ts.capture_rng(),
            "sampler_classes": [int(c) for c in getattr(self.sampler, "labels", [])],
        }


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
