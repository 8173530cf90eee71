import random
from pathlib import Path

import numpy as np
import pytest
import torch

from kenning.config import ModelConfig, TrainConfig
from kenning.data.readers import read_dataset, select_split
from kenning.data.transforms import eval_transform, train_transform
from kenning.embeddings.feature_cache import _savez, cache_key, cached_features
from kenning.embeddings.model import create_model, data_config


@pytest.fixture(scope="module")
def setup(demo_dir: Path):
    model = create_model(ModelConfig(image_size=64, embedding_dim=0))
    mean, std = data_config(model)
    paths = select_split(read_dataset(demo_dir), "train")["path"].tolist()[:10]
    transforms = (eval_transform(64, mean, std), train_transform(64, mean, std, TrainConfig()))
    return model, paths, transforms


def _run(setup, cache: Path, paths=None):
    model, default_paths, (plain, augment) = setup
    return cached_features(
        model, paths or default_paths, plain, augment, 2, 0, cache, {"size": 64}, torch.device("cpu"),
        batch_size=4, chunk=4, progress=False,
    )  # fmt: skip


def test_features_are_computed_once_and_reused(setup, tmp_path: Path) -> None:
    before = (torch.get_rng_state(), random.getstate())
    features, ok, errors = _run(setup, tmp_path)
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]  # training draws unchanged
    assert features.shape == (10, 3, 1280) and ok.all() and not errors
    assert not np.allclose(features[:, 0], features[:, 1])  # augmented views differ from the plain one
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.partial.npz"))
    stamp = files[0].stat().st_mtime_ns
    again, _, _ = _run(setup, tmp_path)
    assert np.array_equal(again, features) and files[0].stat().st_mtime_ns == stamp  # read, not recomputed


def test_a_changed_image_or_backbone_changes_the_key(setup, tmp_path: Path) -> None:
    model, paths, _ = setup
    key = cache_key(model, paths, {"size": 64})
    assert cache_key(model, paths[:-1], {"size": 64}) != key
    assert cache_key(model, paths, {"size": 96}) != key
    other = create_model(ModelConfig(image_size=64, embedding_dim=0, pretrained=False))
    assert cache_key(other, paths, {"size": 64}) != key


def test_an_interrupted_computation_resumes_from_its_last_chunk(setup, tmp_path: Path) -> None:
    full, ok, _ = _run(setup, tmp_path / "full")
    model, paths, _ = setup
    key = cache_key(model, paths, {"size": 64, "views": 2, "seed": 0})
    marked = full.copy()
    marked[:4] = 7.0  # what a killed run had saved for its first chunk, marked to see it is used
    partial = tmp_path / "resume" / f"{key}.partial.npz"
    partial.parent.mkdir()
    _savez(partial, features=marked, ok=ok, errors=np.array([], dtype=str), done=4)
    resumed, _, _ = _run(setup, tmp_path / "resume")
    assert (resumed[:4] == 7.0).all()  # the first chunk came from the partial file
    assert np.array_equal(resumed[4:], full[4:])  # the rest is what an uninterrupted run computes
    assert not partial.exists()
