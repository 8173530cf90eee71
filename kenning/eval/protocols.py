"""The benchmark protocols of ../shared/data/README.md, runnable by name on any labelled dataset.

reid (A): every image of the evaluation split queries all the others except its own sighting
(nyala's two flank photos of one sighting share the scene), closed set: recognition quality.
catalogue (B): each known identity enrolled from its first sighting, new
identities must be answered unknown by the threshold calibrated on held-out training identities.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from kenning.build import build_index
from kenning.config import IndexConfig, LocalConfig
from kenning.data.splits import catalogue_split
from kenning.errors import KenningError
from kenning.eval.evaluate import EvalResult, evaluate
from kenning.recognizer import Recognizer

PROTOCOLS = ("reid", "catalogue")


def run_protocol(
    protocol: str,
    model_dir: str | Path,
    images: pd.DataFrame,
    cfg: IndexConfig,
    index_dir: str | Path | None = None,
    progress: bool = True,
    local: LocalConfig | None = None,
) -> EvalResult:
    """Build the protocol's index from `images` (the evaluation split) with the model, and score it.
    The index is kept in `index_dir` when given, else built in a temporary folder."""
    if protocol not in PROTOCOLS:
        raise KenningError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "reid":
        gallery, queries = images, images
    else:
        gallery, queries = catalogue_split(images)
    if index_dir is None:
        with tempfile.TemporaryDirectory(prefix="kenning-protocol-") as tmp:
            return _score(protocol, model_dir, gallery, queries, cfg, Path(tmp), progress, local)
    return _score(protocol, model_dir, gallery, queries, cfg, Path(index_dir), progress, local)


def _score(
    protocol: str,
    model_dir: str | Path,
    gallery: pd.DataFrame,
    queries: pd.DataFrame,
    cfg: IndexConfig,
    index_dir: Path,
    progress: bool,
    local: LocalConfig | None,
) -> EvalResult:
    closed = protocol == "reid"
    build_index(model_dir, gallery, cfg, index_dir, progress=progress, calibrate=not closed, local=local)
    recognizer = Recognizer.open(index_dir, progress=progress)
    return evaluate(recognizer, queries, closed_set=closed, exclude_sighting=closed, new_rate=cfg.new_rate)
