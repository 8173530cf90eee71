"""What a local-feature family is: an extractor with its descriptor layout and the matcher that
scores its descriptors, built by name from the tables in registry.py (timm's `create_model` is
the model)."""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np
from PIL import Image

from kenning.config import LocalConfig
from kenning.errors import KenningError
from kenning.local.featureset import Layout, LocalFeatures, LocalScores
from kenning.local.registry import EXTRACTORS, MATCHERS


class Extractor(Protocol):
    name: str
    layout: Layout  # descriptor size and dtype, carried into every stored feature set
    matcher: str  # a name in registry.MATCHERS: what scores these descriptors against a gallery

    def __call__(self, image: Image.Image, foreground: np.ndarray, cfg: LocalConfig) -> LocalFeatures:
        """Keypoints on the instance (where `foreground` is high) and their descriptors."""
        ...


class Matcher(Protocol):
    """Scores a query's local features against a gallery's (built over a FeatureSet)."""

    def score(
        self, query: LocalFeatures, exclude: np.ndarray | None = None, candidates: np.ndarray | None = None
    ) -> LocalScores: ...


def create_extractor(name: str) -> Extractor:
    return _load(EXTRACTORS, name, "EXTRACTOR", "local features")


def matcher_class(name: str) -> Any:
    """The matcher class registered as `name` (constructed by the recognizer over a gallery)."""
    return _load(MATCHERS, name, "MATCHER", "local matcher")


def _load(table: dict[str, str], name: str, attribute: str, what: str) -> Any:
    if name not in table:
        raise KenningError(f"{what} {name!r} is not one of {', '.join(table)}")
    return getattr(importlib.import_module(table[name]), attribute)
