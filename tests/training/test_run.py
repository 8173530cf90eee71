import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from kenning.data.readers import UNLABELLED
from kenning.embeddings.checkpoint import WEIGHTS, load_holdout, load_model
from kenning.embeddings.model import create_model
from kenning.errors import KenningError
from kenning.training.run import split_holdout
from tests.hostile.conftest import cli
from tests.processes import kill_when

ROOT = Path(__file__).resolve().parent.parent.parent


def _table(counts: dict[str, int], unlabelled: int = 0) -> pd.DataFrame:
    rows = [(f"{lab}_{i}", lab) for lab, n in counts.items() for i in range(n)]
    rows += [(f"u_{i}", UNLABELLED) for i in range(unlabelled)]
    return pd.DataFrame(
        {
            "image_id": [r[0] for r in rows],
            "path": [r[0] for r in rows],
            "label": [r[1] for r in rows],
            "split": "train",
        }
    )


def test_holdout_takes_whole_identities_with_two_or_more_images() -> None:
    df = _table({f"c{i}": (1 if i < 4 else 3) for i in range(10)}, unlabelled=5)
    train, holdout = split_holdout(df, 0.2, seed=0)
    held = set(holdout["label"]) - {UNLABELLED}
    assert len(held) == 2
    assert not held & set(train["label"])  # no identity on both sides
    assert all((df["label"] == lab).sum() >= 2 for lab in held)
    assert UNLABELLED not in set(train["label"])  # unlabelled images never train
    assert (holdout["label"] == UNLABELLED).sum() == 5
    assert len(train) + (holdout["label"] != UNLABELLED).sum() == (df["label"] != UNLABELLED).sum()


def test_trained_model_saves_manifest_and_reloads(trained_model: Path) -> None:
    model, manifest = load_model(trained_model)
    assert manifest.embedding_dim == 64 and manifest.image_size == 64
    assert len(manifest.classes) >= 2
    log = json.loads((trained_model / "train_log.json").read_text())
    assert len(log["epoch_losses"]) == 2 and all(v > 0 for v in log["epoch_losses"])
    holdout = load_holdout(trained_model)
    assert holdout is not None and not set(holdout["label"]) & set(manifest.classes)
    out = model(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 64)


def test_tampered_weights_are_detected(trained_model: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(trained_model, copy)
    state = torch.load(copy / WEIGHTS, weights_only=True)
    state["model"]["head.0.weight"] += 1
    torch.save(state, copy / WEIGHTS)
    with pytest.raises(KenningError, match="does not match its manifest"):
        load_model(copy)


# --- train-embed from the CLI: every loss, both modes, checkpoints, best epoch, resume after kill ---

SMALL = [
    "--set", "model.image_size=64",
    "--set", "model.embedding_dim=64",
    "--set", "train.classes_per_batch=4",
    "--set", "train.images_per_class=2",
    "--set", "train.holdout_fraction=0.3",
    "--quiet",
]  # fmt: skip


def _train_args(demo_dir: Path, cache: Path, *extra: str) -> list[str]:
    return ["train-embed", "--data", str(demo_dir), *SMALL, "--set", f"train.cache_dir={cache}", *extra]


def _kenning(*args: str | Path) -> subprocess.CompletedProcess:
    """The CLI in-process (the killed run below is a real process: it must die)."""
    run = cli(*args)
    return subprocess.CompletedProcess([str(a) for a in args], run.exit_code, run.stdout, run.stderr)


@pytest.mark.parametrize(
    "loss,extra",
    [
        ("arcface", []),
        ("subcenter_arcface", ["--set", "loss.dynamic_margin=true"]),
        ("triplet", ["--set", "loss.miner=batch_hard"]),
        ("triplet", ["--set", "loss.miner=multi_similarity"]),
        ("contrastive", ["--set", "loss.miner=none"]),
        ("arcface+triplet:0.5", []),
    ],
)
def test_each_loss_trains_frozen_from_the_cli_and_its_loss_falls(
    demo_dir: Path, feature_cache: Path, tmp_path: Path, loss: str, extra: list[str]
) -> None:
    out = tmp_path / "model"
    args = _train_args(demo_dir, feature_cache, "--out", str(out), "--mode", "frozen", "--loss", loss, "--epochs", "12")
    done = _kenning(*args, "--set", "train.head_lr=3e-3", *extra)
    assert done.returncode == 0, done.stderr
    log = json.loads((out / "train_log.json").read_text())
    losses = log["epoch_losses"]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    model, manifest = load_model(out)  # the same model directory as fine-tuning writes
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 64)
    assert manifest.config["loss"]["name"] == loss and manifest.config["train"]["mode"] == "frozen"


def test_finetune_trains_backbone_and_keeps_the_best_epoch(demo_dir: Path, feature_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    args = _train_args(demo_dir, feature_cache, "--out", str(out), "--mode", "finetune")
    args += ["--loss", "subcenter_arcface+triplet:0.5"]
    done = _kenning(*args, "--epochs", "4", "--set", "loss.dynamic_margin=true")
    assert done.returncode == 0, done.stderr
    log = json.loads((out / "train_log.json").read_text())
    assert log["epoch_losses"][-1] < log["epoch_losses"][0]
    history = log["history"]
    assert all({"recall@1", "map@5", "map@r"} <= row.keys() for row in history)
    scores = [row["map@5"] for row in history]
    assert log["best_epoch"] == 1 + int(np.argmax(scores))  # the first epoch with the highest MAP@5
    assert f"best epoch {log['best_epoch']}" in done.stdout

    model, _ = load_model(out)
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == log["best_epoch"]
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["model"][key]), key
    untouched = create_model(model_config_of(out))
    assert not torch.equal(untouched.backbone.conv_stem.weight, model.backbone.conv_stem.weight)  # backbone trained

    saved = torch.load(out / "model.pt", weights_only=True)
    assert saved["epoch"] == log["best_epoch"] and torch.equal(
        saved["loss"]["losses.subcenter_arcface.W"], best["loss"]["losses.subcenter_arcface.W"]
    )  # the loss's class centres are saved with the model

    with Image.open(out / "training_curves.png") as png:
        assert png.format == "PNG" and png.size == (1000, 400)
        assert np.asarray(png.convert("L")).std() > 10  # drawn, not blank


def model_config_of(model_dir: Path):
    from kenning.config import ModelConfig

    manifest = json.loads((model_dir / "manifest.json").read_text())
    return ModelConfig(backbone=manifest["backbone"], embedding_dim=manifest["head_dim"], image_size=64)


def test_killed_run_resumes_to_exactly_the_uninterrupted_weights(
    demo_dir: Path, feature_cache: Path, tmp_path: Path
) -> None:
    args = _train_args(demo_dir, feature_cache, "--mode", "frozen", "--loss", "arcface+triplet:0.5", "--epochs", "30")
    reference = _kenning(*args, "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args, "--out", str(killed)])
    assert kill_when(proc, (killed / "checkpoints" / "last.pt").exists) == -signal.SIGKILL
    assert not (killed / "manifest.json").exists()  # killed mid-run, not after it finished
    stopped_at = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert 1 <= stopped_at < 30

    again = _kenning(*args, "--out", str(killed))
    assert again.returncode == 2 and "unfinished run" in again.stderr and "--resume" in again.stderr
    changed = _kenning(*args[:-1], "31", "--out", str(killed), "--resume")
    assert changed.returncode == 2 and "train.epochs" in changed.stderr

    resumed = _kenning(*args, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    log = json.loads((killed / "train_log.json").read_text())
    assert log["resumed_from"] >= stopped_at and len(log["history"]) == 30
    ref_manifest = json.loads((tmp_path / "reference" / "manifest.json").read_text())
    assert json.loads((killed / "manifest.json").read_text())["fingerprint"] == ref_manifest["fingerprint"]
    assert log["epoch_losses"] == json.loads((tmp_path / "reference" / "train_log.json").read_text())["epoch_losses"]


def test_a_second_run_into_one_folder_is_refused_and_leftovers_are_swept(demo_dir: Path, tmp_path: Path) -> None:
    from kenning.embeddings import training_state as ts

    out = tmp_path / "model"
    (out / ts.CHECKPOINTS).mkdir(parents=True)
    leftover = out / ts.CHECKPOINTS / ".last.pt.k2x9a1.tmp"  # a run killed while writing its checkpoint
    leftover.write_bytes(b"\0" * 1000)
    with ts.training_run(out):
        assert not leftover.exists()
        with pytest.raises(KenningError, match="is being trained by another process"), ts.training_run(out):
            pass
    empty = tmp_path / "refused"
    with pytest.raises(KenningError, match="too few"), ts.training_run(empty):
        raise KenningError("too few identities")
    assert not empty.exists()  # a refused run leaves no folder behind


def test_auto_mode_fine_tunes_on_cuda_and_freezes_the_backbone_on_a_cpu() -> None:
    from kenning.config import load_config
    from kenning.training.run import resolve_mode

    cfg = load_config(None, {})
    assert cfg.train.mode == "auto"
    assert resolve_mode(cfg, torch.device("cpu")).train.mode == "frozen"
    assert resolve_mode(cfg, torch.device("cuda")).train.mode == "finetune"
    assert resolve_mode(load_config(None, {"train.mode": "finetune"}), torch.device("cpu")).train.mode == "finetune"
