import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from kenning.data.readers import UNLABELLED
from kenning.embeddings.checkpoint import WEIGHTS, load_holdout, load_model
from kenning.embeddings.train import split_holdout
from kenning.errors import KenningError


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
