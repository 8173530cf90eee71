"""Distributed training: torchrun with 2 gloo processes on the CPU, against the one-process run."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kenning.embeddings.checkpoint import load_model
from kenning.embeddings.distributed import Ranks, shard_bounds
from kenning.embeddings.sampling import DistributedPKSampler
from tests.processes import kill_when
from tests.training.test_run import ROOT, _kenning, _train_args

EPOCHS = 40
ARGS = ("--mode", "frozen", "--loss", "arcface+triplet:0.5", "--epochs", str(EPOCHS), "--set", "train.head_lr=3e-3")


def _torchrun(*args: str | Path) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kenning"]
    return [*launcher, *map(str, args)]


def _batches(sampler: DistributedPKSampler) -> list[list[int]]:
    drawn = list(sampler)
    return [drawn[i : i + sampler.batch_size] for i in range(0, len(drawn), sampler.batch_size)]


def test_each_rank_draws_its_own_classes_every_step_and_an_epoch_repeats_exactly() -> None:
    targets = np.repeat(np.arange(12), [1, 2, 3, 4, 5, 6, 2, 2, 3, 3, 8, 1])
    ranks = [DistributedPKSampler(targets, 4, 2, Ranks(r, 2), seed=7) for r in (0, 1)]
    assert ranks[0].batch_size == 8 and len(ranks[0]) == len(ranks[1]) == ranks[0].steps * 8
    first = [_batches(s) for s in ranks]
    for step_0, step_1 in zip(*first, strict=True):
        classes_0, classes_1 = set(targets[step_0]), set(targets[step_1])
        assert len(classes_0) == len(classes_1) == 4 and not classes_0 & classes_1
        for step in (step_0, step_1):  # K images of each class, together
            assert all(targets[step[i]] == targets[step[i + 1]] for i in range(0, len(step), 2))
    assert [_batches(s) for s in ranks] == first  # a function of (seed, epoch): a resumed run draws the same
    for sampler in ranks:
        sampler.set_epoch(1)
    assert [_batches(s) for s in ranks] != first
    with pytest.raises(Exception, match="at least 3 training identities"):
        DistributedPKSampler(np.array([0, 0, 1, 1]), 4, 2, Ranks(0, 3), seed=0)


def test_shards_cover_every_item_once() -> None:
    for n in (0, 1, 5, 10):
        bounds = [shard_bounds(n, Ranks(r, 3)) for r in range(3)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))


@pytest.fixture(scope="module")
def one_and_two(demo_dir: Path, feature_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same training, in one process and under torchrun with two."""
    work = tmp_path_factory.mktemp("distributed")
    single = _kenning(*_train_args(demo_dir, feature_cache, *ARGS), "--out", work / "one")
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        _torchrun(*_train_args(demo_dir, feature_cache, *ARGS), "--out", work / "two"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    assert double.stdout.count("saved to") == 1  # rank 0 alone reports (and writes)
    return work / "one", work / "two"


def test_two_processes_train_a_model_of_the_same_form_and_the_loss_falls(one_and_two: tuple[Path, Path]) -> None:
    one, two = one_and_two
    log = json.loads((two / "train_log.json").read_text())
    assert log["processes"] == 2 and len(log["epoch_losses"]) == EPOCHS
    losses = log["epoch_losses"]
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    assert all({"recall@1", "map@5"} <= row.keys() for row in log["history"])  # rank 0 validated every epoch
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    (model_1, manifest_1), (model_2, manifest_2) = load_model(one), load_model(two)
    state_1, state_2 = model_1.state_dict(), model_2.state_dict()
    assert state_1.keys() == state_2.keys() and all(state_1[k].shape == state_2[k].shape for k in state_1)
    assert manifest_2.classes == manifest_1.classes and manifest_2.fingerprint != manifest_1.fingerprint
    saved_1 = torch.load(one / "model.pt", weights_only=True)["loss"]
    saved_2 = torch.load(two / "model.pt", weights_only=True)["loss"]
    assert {k: v.shape for k, v in saved_1.items()} == {k: v.shape for k, v in saved_2.items()}  # class centres
    assert model_2(torch.rand(2, 3, 64, 64)).shape == (2, 64)


def test_a_killed_distributed_run_resumes_to_the_uninterrupted_weights(
    one_and_two: tuple[Path, Path], demo_dir: Path, feature_cache: Path, tmp_path: Path
) -> None:
    _, reference = one_and_two
    killed = tmp_path / "killed"
    args = _train_args(demo_dir, feature_cache, *ARGS)
    proc = subprocess.Popen(_torchrun(*args, "--out", killed))
    kill_when(proc, (killed / "checkpoints" / "last.pt").exists, tree=True)  # the launcher and both workers
    assert not (killed / "manifest.json").exists()
    stopped_at = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert 1 <= stopped_at < EPOCHS

    resumed = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args, "--out", str(killed), "--resume", "--nproc", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = json.loads((killed / "train_log.json").read_text())
    assert log["resumed_from"] >= stopped_at and len(log["history"]) == EPOCHS and log["processes"] == 2
    expected = json.loads((reference / "train_log.json").read_text())
    assert log["epoch_losses"] == pytest.approx(expected["epoch_losses"], rel=1e-5)
    assert load_model(killed)[1].fingerprint == load_model(reference)[1].fingerprint


def _gathered_loss(rank: int, world: int, init: str, spec: str, out: str) -> None:
    """One rank of a 2-process group: its half of a batch through the distributed loss."""
    import torch.distributed as dist

    from kenning.config import LossConfig
    from kenning.embeddings.losses import create_loss

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        embeddings, labels = _batch()
        half = slice(rank * 8, (rank + 1) * 8)
        mine = embeddings[half].clone().requires_grad_(True)
        loss = create_loss(LossConfig(name=spec, miner="none"), np.ones(4), 16, distributed=True)(mine, labels[half])
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": mine.grad}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.nn.functional.normalize(torch.randn(16, 16, generator=generator), dim=1)
    return embeddings, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1, 2, 2, 3, 3])


@pytest.mark.parametrize("spec", ["triplet", "contrastive"])
def test_pairwise_losses_see_the_whole_global_batch(spec: str, tmp_path: Path) -> None:
    """Two ranks holding half a batch each compute the loss of the whole batch (pairs across ranks
    included): the same value (times the world size, which DDP's gradient averaging divides out)
    and, per rank, the gradient the one-process loss gives its half."""
    from kenning.config import LossConfig
    from kenning.embeddings.losses import create_loss

    out = str(tmp_path / "result")
    init = f"file://{tmp_path / 'rendezvous'}"
    torch.multiprocessing.spawn(_gathered_loss, args=(2, init, spec, out), nprocs=2, join=True)
    embeddings, labels = _batch()
    whole = embeddings.clone().requires_grad_(True)
    expected = create_loss(LossConfig(name=spec, miner="none"), np.ones(4), 16)(whole, labels)
    expected.backward()
    for rank in (0, 1):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        assert got["loss"].item() == pytest.approx(2 * expected.item(), rel=1e-5)
        assert torch.allclose(got["grad"] / 2, whole.grad[rank * 8 : (rank + 1) * 8], atol=1e-6)
