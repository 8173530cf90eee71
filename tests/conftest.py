"""Small generated data and a real (tiny) trained model, shared by the tests of one session."""

from __future__ import annotations

from pathlib import Path

import pytest

from kenning.config import Config, load_config
from kenning.data.demo import DemoSpec, write_demo_set
from kenning.data.readers import read_dataset, select_split

SMALL_DEMO = DemoSpec(
    train_landmarks=10, test_landmarks=6, train_photos=2, min_views=2, max_views=4, distractors=4, image_size=64, seed=1
)


def small_config() -> Config:
    return load_config(
        None,
        {
            "model.image_size": 64,
            "model.embedding_dim": 64,
            "train.epochs": 2,
            "train.classes_per_batch": 4,
            "train.images_per_class": 2,
            "train.holdout_fraction": 0.3,
            "train.mode": "finetune",
            "index.k": 5,
            "index.batch_size": 16,
        },
    )


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    write_demo_set(out, SMALL_DEMO)
    return out


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frozen-mode feature cache shared by the session's runs (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="session")
def trained_model(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kenning.training.run import train_embedding

    out = tmp_path_factory.mktemp("model")
    train_embedding(small_config(), select_split(read_dataset(demo_dir), "train"), out, progress=False)
    return out


@pytest.fixture(scope="session")
def built_index(trained_model: Path, demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kenning.build import build_index

    out = tmp_path_factory.mktemp("index")
    build_index(trained_model, select_split(read_dataset(demo_dir), "test"), small_config().index, out, progress=False)
    return out


LOCAL_DEMO = DemoSpec(
    train_landmarks=24, test_landmarks=6, train_photos=2, min_views=3, max_views=4, distractors=4, image_size=96, seed=2
)
LOCAL_SMALL = ["--set", "local.max_keypoints=200", "--set", "local.image_side=256"]


def build_local_index(model: Path, data: Path, out: Path, local: str, *extra: str) -> None:
    """`build-index` of the demo's test split, with or without local matching, at test scale."""
    from tests.hostile.conftest import cli

    run = cli(
        "build-index",
        "--model",
        model,
        "--data",
        data,
        "--split",
        "test",
        "--out",
        out,
        "--local",
        local,
        "--k",
        str(small_config().index.k),
        *LOCAL_SMALL,
        *extra,
    )
    assert run.exit_code == 0, run.stderr


def untrained_model(data: Path, out: Path, holdout_fraction: float) -> Path:
    """ImageNet features, no training, with this share of the identities held out."""
    from tests.hostile.conftest import cli

    run = cli(
        "train-embed", "--data", data, "--out", out, "--epochs", "0", "--image-size", "64", "--embedding-dim", "0",
        "--set", f"train.holdout_fraction={holdout_fraction}", "--quiet",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    return out


@pytest.fixture(scope="session")
def local_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """More training landmarks than the session's demo: the fusion needs held-out identities to fit on."""
    out = tmp_path_factory.mktemp("local-demo")
    write_demo_set(out, LOCAL_DEMO)
    return out


@pytest.fixture(scope="session")
def local_model(local_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageNet features, no training (the fusion is fitted on the half of the identities held out)."""
    out = tmp_path_factory.mktemp("local-model") / "model"
    return untrained_model(local_demo, out, holdout_fraction=0.5)
