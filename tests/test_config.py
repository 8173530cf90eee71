from pathlib import Path

import pytest

from kenning.config import RANGES, load_config, parse_assignment
from kenning.errors import KenningError

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_defaults_then_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\n  lr: 1\nindex:\n  unknown_label: new_whale\n")
    cfg = load_config(path, {"train.epochs": 3, "model.weights": None})
    assert cfg.train.epochs == 3  # override beats file
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # int in YAML coerced to float
    assert cfg.index.unknown_label == "new_whale"
    assert cfg.model.backbone == "tf_efficientnet_lite0"  # default kept


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path: Path) -> None:
    assert load_config(path).model.backbone


def test_scenario_configs_exist() -> None:
    assert {"cpu-quick", "landmarks", "whales"} <= {p.stem for p in CONFIGS}


def test_scenarios_choose_their_training_recipes() -> None:
    from kenning.embeddings.losses import parse_loss_spec

    configs = {p.stem: load_config(p) for p in CONFIGS}
    assert configs["cpu-quick"].train.mode == "frozen"
    landmarks = configs["landmarks"].loss
    assert landmarks.name == "subcenter_arcface" and landmarks.dynamic_margin
    assert {"contrastive", "triplet"} & parse_loss_spec(configs["whales"].loss.name).keys()
    assert configs["whales"].index.unknown_label == "new_whale" and not configs["whales"].train.hflip


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.epoch": 1}, "unknown config key 'train.epoch'"),
        ({"nosuch.key": 1}, "unknown config key 'nosuch.key'"),
        ({"train.epochs": "many"}, "expects"),
        ({"train.epochs": None}, None),  # None means "not given", not an error
        ({"train.hflip": 1}, "expects"),
        ({"train.mode": "freeze"}, "must be one of auto, finetune, frozen"),
        ({"loss.miner": "hardest"}, "must be one of"),
        ({"index.threshold_choice": "mean"}, "must be one of best, bagged"),
        ({"index.threshold_choice": "bagged", "index.resamples": 0}, "set resamples > 0"),
    ],
)
def test_bad_overrides(overrides: dict, message: str | None) -> None:
    if message is None:
        assert load_config(None, overrides).train.epochs == 10
        return
    with pytest.raises(KenningError, match=message):
        load_config(None, overrides)


def test_parse_assignment_types() -> None:
    key, value = parse_assignment("train.lr=1e-4")  # YAML 1.1 reads this as a string...
    assert load_config(None, {key: value}).train.lr == 1e-4  # ...and the config still gets a float
    assert load_config(None, {"train.epochs": "3"}).train.epochs == 3
    assert parse_assignment("index.threshold=null") == ("index.threshold", None)
    assert parse_assignment("train.hflip=true") == ("train.hflip", True)
    with pytest.raises(KenningError, match="key=value"):
        parse_assignment("train.lr")


def test_missing_and_invalid_config_file(tmp_path: Path) -> None:
    with pytest.raises(KenningError, match="not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2")
    with pytest.raises(KenningError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("key", sorted(RANGES))
def test_every_numeric_key_refuses_values_out_of_range(key: str) -> None:
    *open_low, low, high = RANGES[key]
    outside = [high + 1] if high is not None else []
    if low is not None:
        outside.append(low if open_low else low - 1)
    if isinstance(low, float) or isinstance(high, float):
        outside += [float("nan"), float("inf")]
    for value in outside:
        with pytest.raises(KenningError, match=f"config key '{key}' must be"):
            load_config(None, {key: value})
    load_config(None, {key: high if high is not None else low + 1})  # the edge itself is allowed


def test_options_map_to_config_keys_by_their_dataclass_fields() -> None:
    from kenning.config import option_overrides

    got = option_overrides(("index", "local"), k=5, local="sift", threshold=None, unknown_label="new_whale")
    assert got == {"index.k": 5, "local.method": "sift", "index.unknown_label": "new_whale"}  # k: index's first
    assert option_overrides(("train", "model", "loss"), loss="triplet", weights=Path("w.pt")) == {
        "loss.name": "triplet",
        "model.weights": "w.pt",
    }
    with pytest.raises(ValueError, match="no field"):
        option_overrides(("index",), epochs=3)
