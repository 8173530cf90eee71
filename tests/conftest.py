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
    from kenning.embeddings.train import train_embedding

    out = tmp_path_factory.mktemp("model")
    train_embedding(small_config(), select_split(read_dataset(demo_dir), "train"), out, progress=False)
    return out


@pytest.fixture(scope="session")
def built_index(trained_model: Path, demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kenning.build import build_index

    out = tmp_path_factory.mktemp("index")
    build_index(trained_model, select_split(read_dataset(demo_dir), "test"), small_config().index, out, progress=False)
    return out
