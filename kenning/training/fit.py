"""The epoch loop: P x K batches, AMP on CUDA, DDP under torchrun, validation, best and last checkpoints."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kenning.config import Config
from kenning.data.images import collate_skipping_bad
from kenning.embeddings import training_state as ts
from kenning.embeddings.distributed import Ranks, gather_objects, sum_over_ranks
from kenning.embeddings.model import EmbeddingNet
from kenning.embeddings.sampling import DistributedPKSampler, create_sampler
from kenning.errors import KenningError
from kenning.training.batches import CachedBatches, ImageBatches
from kenning.training.curves import CURVES, plot_training_curves
from kenning.training.validation import leave_one_out


class Objective(torch.nn.Module):
    """Model and loss as one module, so that DDP averages the gradients of both (the ArcFace class
    centres included) and the step is one call either way."""

    def __init__(self, model: EmbeddingNet, loss_fn: torch.nn.Module, forward) -> None:
        super().__init__()
        self.model, self.loss_fn, self.embed = model, loss_fn, forward

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.embed(self.model, inputs).float(), labels)


class Fit:
    """The epoch loop and the state it checkpoints."""

    def __init__(
        self,
        cfg: Config,
        model: EmbeddingNet,
        loss_fn: torch.nn.Module,
        source: ImageBatches | CachedBatches,
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
        if self.use_amp and isinstance(source, ImageBatches):
            model.to(memory_format=torch.channels_last)
        objective = Objective(model, loss_fn, source.forward)
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
