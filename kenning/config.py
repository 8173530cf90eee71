"""Typed configuration loaded from YAML (`configs/*.yaml`); any key can be overridden by dotted name."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from kenning.errors import KenningError
from kenning.labels import check_label
from kenning.local.registry import EXTRACTORS
from kenning.paths import require_file


@dataclass
class ModelConfig:
    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = None  # any local checkpoint; overrides the packaged ImageNet weights
    embedding_dim: int = 512  # 0: no head, the pooled backbone features are the embedding
    gem_p: float = 3.0
    image_size: int = 224


@dataclass
class LossConfig:
    """Which losses train the embedding, and their parameters (all from pytorch-metric-learning)."""

    # "+"-joined names with optional weights: arcface, subcenter_arcface, triplet, contrastive,
    # e.g. "subcenter_arcface+triplet:0.5"
    name: str = "arcface"
    margin: float = 28.6  # ArcFace angular margin, degrees, as pytorch-metric-learning takes it
    scale: float = 30.0  # 64 (the paper's) converges poorly with few identities
    sub_centers: int = 3  # subcenter_arcface: centres per identity (absorb noisy or odd views)
    dynamic_margin: bool = False  # per-class margin, larger for rarer classes (GLR 2020 winners)
    margin_min: float = 11.5  # degrees, for the most frequent class when dynamic
    margin_max: float = 28.6  # degrees, for the rarest class when dynamic
    miner: str = "batch_hard"  # triplet / contrastive: batch_hard, multi_similarity, semihard, none
    triplet_margin: float = 0.1
    pos_margin: float = 0.0  # contrastive, Euclidean distance between L2-normalised embeddings
    neg_margin: float = 1.0


@dataclass
class TrainConfig:
    epochs: int = 10
    mode: str = "auto"  # finetune: train everything; frozen: cached backbone features, head + loss; auto: by device
    classes_per_batch: int = 8  # P of the P x K batch
    images_per_class: int = 4  # K of the P x K batch
    small_classes: str = "repeat"  # fewer than K images: repeat (augmented copies) or drop
    lr: float = 3e-4  # backbone
    head_lr: float = 1e-3
    loss_lr: float = 1e-2  # loss parameters (ArcFace class centres)
    weight_decay: float = 1e-4
    holdout_fraction: float = 0.2  # training identities kept out for validation and unknown calibration
    select_by: str = "map@5"  # validation metric that picks the best epoch: map@5, recall@1, map@r
    hflip: bool = False  # a mirrored flank or fluke is another individual
    scale_min: float = 0.5  # random resized crop keeps at least this fraction of the image
    color_jitter: float = 0.3
    rotation: float = 10.0  # degrees, random rotation either way
    cache_views: int = 4  # frozen mode: augmented views cached per image (plus one plain view)
    cache_dir: str = "~/.cache/kenning/features"
    num_workers: int = 0
    device: str = "auto"
    seed: int = 0


@dataclass
class IndexConfig:
    k: int = 10  # neighbours that vote
    power: float = 3.0  # vote weight = similarity ** power
    threshold: float | None = None  # None: calibrate on held-out identities at build time
    calibrate: str = "map@5"  # what the calibrated threshold maximises: map@5, gap, balanced, or far (see target_far)
    target_far: float = 0.05  # calibrate=far: highest share of unknown queries answered with a known label
    normalise: str = "none"  # cohort: each query's scores normalised by its own impostors before the threshold
    cohort_skip: int = 1  # normalise=cohort: best candidates left out of a query's cohort
    cohort_size: int = 20  # normalise=cohort: candidates after them that are its impostor scores
    new_rate: float | None = None  # eval / batch queries: the threshold of each batch answers this share new
    grouping: bool = False  # calibrate `query --batch --group` (photos that match each other answered together)
    review_far: float = 0.02  # review band: above it at most this share of held-out new queries is named
    review_miss: float = 0.05  # review band: below it at most this share of held-out right answers falls
    resamples: int = 20  # bootstrap draws of the held-out identities measuring the threshold's spread; 0: none
    threshold_choice: str = "best"  # best: the best on all held-out queries; bagged: the median of the draws' choices
    unknown_label: str = "unknown"
    flip_tta: bool = False
    batch_size: int = 32
    backend: str = "faiss"  # faiss (GPU when faiss-gpu sees one) or annoy
    index_type: str = "auto"  # FAISS factory string (Flat, IVF1024,Flat, HNSW32, IVF1024,PQ64,RFlat) or annoy trees=N
    search_params: str = "auto"  # FAISS ParameterSpace string (nprobe=32, efSearch=128) or annoy search_k=N
    viewpoints: str = "compatible"  # compatible: a photo matches only compatible viewpoints; any: all photos
    compatible_viewpoints: str = ""  # pairs matched besides equal viewpoints: "front=left, front=right"
    target_recall: float = 0.95  # search_params auto, approximate FAISS: the fastest setting reaching this recall@10


@dataclass
class LocalConfig:
    """The second matching stage: local features on the instance, scored by LNBNN, fused with the
    global similarity (see kenning/local)."""

    method: str = "none"  # a family of local/registry.py (sift: RootSIFT + LNBNN); none: the embedding alone
    max_keypoints: int = 1000  # per image, the strongest on the foreground
    image_side: int = 512  # px: longest side the image is resized to (up or down) before detection; 0: as is
    contrast: float = 0.04  # sift: OpenCV's contrastThreshold; lower finds more keypoints on small, flat crops
    upright: bool = False  # one orientation per keypoint (upright animals, buildings): faster, less invariant
    foreground: float = 0.3  # keep keypoints where the foreground map is at least this share of its peak
    k: int = 5  # LNBNN: nearest descriptors that vote; the next one is the normaliser
    shortlist: int = 100  # gallery images scored locally per query when the gallery is too large for one index
    max_descriptors: int = 2_000_000  # gallery descriptors up to which one index of all of them is searched
    spatial: int = 0  # best images per query whose LNBNN votes are re-scored by one transform's inliers; 0: off
    spatial_tolerance: float = 12.0  # px per 512 px of the gallery image's longest side: a vote fits the transform
    identity_score: str = "best_image"  # LNBNN: an identity as its best image, or nsum (each descriptor's best vote)
    whiten: bool = False  # LNBNN searches PCA-whitened descriptors, fitted on the gallery searched (local/whitening.py)
    verify: int = 0  # candidate identities per query checked geometrically (RANSAC inliers, a fused part); 0: off
    glue: int = 0  # candidate identities per query re-matched by the family's learned matcher (a fused part); 0: off

    @property
    def on(self) -> bool:
        return self.method != "none"


# Keys whose value is one of a few words: a typo fails when the config loads, not mid-training.
CHOICES: dict[str, tuple[str, ...]] = {
    "train.mode": ("auto", "finetune", "frozen"),
    "train.small_classes": ("repeat", "drop"),
    "train.select_by": ("map@5", "recall@1", "map@r"),
    "loss.miner": ("batch_hard", "multi_similarity", "semihard", "none"),
    "index.backend": ("faiss", "annoy"),
    "index.calibrate": ("map@5", "gap", "far", "balanced"),
    "index.normalise": ("none", "cohort"),
    "index.threshold_choice": ("best", "bagged"),
    "index.viewpoints": ("compatible", "any"),
    "local.identity_score": ("best_image", "nsum"),
}

# Numeric keys: the range a value must lie in, (low, high), None unbounded; "(" makes low exclusive.
# Every float must also be finite. A value outside is refused where it is parsed, in one line, so a
# NaN threshold or k = 0 never reaches an index or a training run.
RANGES: dict[str, tuple[Any, ...]] = {
    "model.embedding_dim": (0, None),
    "model.gem_p": ("(", 0.0, 100.0),
    "model.image_size": (32, 4096),
    "loss.margin": (0.0, 89.0),
    "loss.scale": ("(", 0.0, 1000.0),
    "loss.sub_centers": (1, 100),
    "loss.margin_min": (0.0, 89.0),
    "loss.margin_max": (0.0, 89.0),
    "loss.triplet_margin": (0.0, 4.0),
    "loss.pos_margin": (0.0, 2.0),
    "loss.neg_margin": (0.0, 2.0),
    "train.epochs": (0, None),
    "train.classes_per_batch": (2, None),
    "train.images_per_class": (1, None),
    "train.lr": (0.0, 10.0),
    "train.head_lr": (0.0, 10.0),
    "train.loss_lr": (0.0, 10.0),
    "train.weight_decay": (0.0, 10.0),
    "train.holdout_fraction": (0.0, 0.9),
    "train.scale_min": ("(", 0.0, 1.0),
    "train.color_jitter": (0.0, 1.0),
    "train.rotation": (0.0, 180.0),
    "train.cache_views": (0, 1000),
    "train.num_workers": (0, 256),
    "train.seed": (0, 2**32 - 1),
    "index.k": (1, 10_000),
    "index.power": (0.0, 100.0),
    "index.threshold": (-1.0, 1.0),  # a similarity or a probability; a normalised threshold is calibrated, not given
    "index.target_far": (0.0, 1.0),
    "index.resamples": (0, 1000),
    "index.review_far": (0.0, 1.0),
    "index.new_rate": (0.0, 1.0),
    "index.review_miss": (0.0, 1.0),
    "index.cohort_skip": (0, 1000),
    "index.cohort_size": (1, 10_000),
    "index.batch_size": (1, 100_000),
    "index.target_recall": ("(", 0.0, 1.0),
    "local.max_keypoints": (1, 100_000),
    "local.image_side": (0, 8192),
    "local.contrast": ("(", 0.0, 1.0),
    "local.foreground": (0.0, 1.0),
    "local.k": (1, 100),
    "local.shortlist": (1, 100_000),
    "local.max_descriptors": (1, None),
    "local.spatial": (0, 1000),
    "local.spatial_tolerance": ("(", 0.0, 512.0),
    "local.verify": (0, 100),
    "local.glue": (0, 100),
}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    local: LocalConfig = field(default_factory=LocalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file, then `overrides` ({"train.epochs": 3, ...}); None values are skipped."""
    cfg = Config()
    if path is not None:
        path = require_file(path, "config file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as exc:
            raise KenningError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
        if not isinstance(data, dict):
            raise KenningError(f"config file {path} must hold a mapping of sections")
        for section, values in data.items():
            if not isinstance(values, dict):
                raise KenningError(f"config section '{section}' in {path} must be a mapping")
            for key, value in values.items():
                set_key(cfg, f"{section}.{key}", value)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_key(cfg, dotted, value)
    _check_together(cfg)
    return cfg


def _check_together(cfg: Config) -> None:
    """Keys that are each valid but not together: refused when the config loads, not after the gallery is read."""
    if cfg.index.threshold_choice == "bagged" and cfg.index.resamples == 0:
        raise KenningError("index.threshold_choice bagged takes the median of index.resamples draws: set resamples > 0")


def option_overrides(sections: tuple[str, ...], **options: Any) -> dict[str, Any]:
    """Command-line options -> config keys, derived from the dataclasses (the CLI and its torchrun
    relaunch use the same): an option is the field of its name in the first of `sections` that has
    one (build-index --k: index.k), or, named after a section, that section's first field (--loss:
    loss.name, --local: local.method). Unset options (None) are left out; paths become strings."""
    out = {}
    for name, value in options.items():
        if value is None:
            continue
        if name in sections:
            key = f"{name}.{_fields(name)[0]}"
        else:
            owner = next((s for s in sections if name in _fields(s)), None)
            if owner is None:
                raise ValueError(f"option {name!r} is no field of {', '.join(sections)}")  # a programming error
            key = f"{owner}.{name}"
        out[key] = str(value) if isinstance(value, Path) else value
    return out


def _fields(section: str) -> list[str]:
    return [f.name for f in dataclasses.fields(get_type_hints(Config)[section])]


def parse_assignment(text: str) -> tuple[str, Any]:
    """'train.epochs=3' -> ('train.epochs', 3); the value is read as YAML so types come out right."""
    if "=" not in text:
        raise KenningError(f"--set expects key=value, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError) as exc:
        raise KenningError(f"--set {text!r}: the value is not valid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: BaseException) -> str:
    """PyYAML's explanation on one line ("found unexpected end of stream at line 1, column 3")."""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def set_key(cfg: Config, dotted: str, value: Any) -> None:
    section_name, _, key = dotted.partition(".")
    section = getattr(cfg, section_name, None)
    if section is None or not dataclasses.is_dataclass(section) or not key:
        raise KenningError(f"unknown config key '{dotted}' (sections: model, train, loss, index, local)")
    hints = get_type_hints(type(section))
    if key not in hints:
        known = ", ".join(f.name for f in dataclasses.fields(section))
        raise KenningError(f"unknown config key '{dotted}'; '{section_name}' has: {known}")
    setattr(section, key, check_value(dotted, _coerce(dotted, value, hints[key])))


def check_value(dotted: str, value: Any) -> Any:
    """`value` when it is allowed for config key `dotted` (a choice, a finite number in range, a
    valid label); else one line naming key, value and what is allowed. Also for values that reach
    a setting without a config file (query --k / --power)."""
    choices = (*EXTRACTORS, "none") if dotted == "local.method" else CHOICES.get(dotted)  # families registered now
    if choices is not None and value not in choices:
        raise KenningError(f"config key '{dotted}' must be one of {', '.join(choices)}, got {value!r}")
    if dotted == "index.unknown_label":
        value = check_label(value, "index.unknown_label")
        if any(ch.isspace() for ch in value):  # it is written as an id in whale submissions
            raise KenningError(f"index.unknown_label {value!r} contains whitespace")
    if dotted in RANGES and value is not None:
        *open_low, low, high = RANGES[dotted]
        if isinstance(value, float) and not math.isfinite(value):
            raise KenningError(f"config key '{dotted}' must be a finite number, got {value!r}")
        too_low = low is not None and (value <= low if open_low else value < low)
        if too_low or (high is not None and value > high):
            shown = f"{'(' if open_low else '['}{'-inf' if low is None else low}, {'inf' if high is None else high}]"
            raise KenningError(f"config key '{dotted}' must be in {shown}, got {value!r}")
    return value


def _coerce(dotted: str, value: Any, hint: Any) -> Any:
    allowed = getattr(hint, "__args__", (hint,))
    if value is None:
        if type(None) in allowed:
            return None
        raise KenningError(f"config key '{dotted}' cannot be empty")
    for typ in allowed:
        if typ is type(None):
            continue
        if typ is bool:
            if isinstance(value, bool):
                return value
            continue
        if typ is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if typ in (int, float) and isinstance(value, str):
            try:  # YAML 1.1 reads 1e-4 (no dot) as a string
                number = float(value)
            except ValueError:
                continue
            if typ is float or number.is_integer():
                return typ(number)
            continue
        if isinstance(value, typ) and not isinstance(value, bool):
            return value
        if typ is str and isinstance(value, int | float):
            return str(value)
    raise KenningError(f"config key '{dotted}' expects {hint}, got {value!r}")
