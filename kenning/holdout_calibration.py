"""Protocol B on the model's held-out identities, through the query path, for `build-index`.

The real gallery plus the held-out identities' enrolled first sightings form the catalogue; their
other images (and every image of the new ones) query it as `query` would. What that decides: the
fusion of the two stages (with local matching), each path's unknown threshold with its spread and
review band, and (asked for) how a batch's photos that match each other are grouped
(grouping_calibration.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kenning.data.metadata import VIEWPOINT, metadata_lists, with_metadata
from kenning.data.splits import catalogue_split
from kenning.decision.fusion import Fusion, fit_fusion
from kenning.decision.grouping import Grouping
from kenning.decision.rules import Fused
from kenning.decision.threshold import Calibration, calibrate_threshold
from kenning.decision.voting import RankedLabels
from kenning.embeddings.checkpoint import load_holdout
from kenning.errors import KenningError, warn
from kenning.grouping_calibration import calibrate_grouping
from kenning.recognizer import Recognizer

MAX_UNREADABLE_SHARE = 0.1  # calibration refuses when more of the held-out images than this cannot be read
FEW_CALIBRATION_QUERIES = 20  # below this, calibration warns that its threshold is rough


@dataclass
class HoldoutCalibration:
    """What the held-out identities decided: each path's threshold, and the fusion of the stages."""

    embedding: Calibration | None  # the unknown threshold of the embedding-only path
    fusion: Fusion | None  # with local matching: the calibrators of the score parts
    fused: Calibration | None  # with local matching: the unknown threshold on the fused probability
    grouping: Grouping | None = None  # asked for, with local matching: how a batch's photos are grouped

    @property
    def main(self) -> Calibration | None:
        """The calibration of the path queries take by default."""
        return self.fused if self.fusion is not None else self.embedding


def readable_holdout(model_dir: str | Path, fingerprint: str) -> pd.DataFrame | None:
    """The model's held-out images, refused up front (before the gallery is embedded) when too many
    of their files are gone: a model moved without its data, or data deleted."""
    holdout = load_holdout(model_dir)
    if holdout is None or holdout.empty:
        return holdout
    missing = [p for p in holdout["path"] if not os.path.isfile(p)]
    refuse_unreadable_holdout(missing, len(holdout), "are missing", fingerprint)
    return holdout


def refuse_unreadable_holdout(bad: list[str], total: int, what: str, model: str) -> None:
    """A threshold calibrated on a held-out set that is mostly gone (data moved, deleted) would be
    silently meaningless: refuse it; a few bad images are only a warning."""
    if len(bad) > MAX_UNREADABLE_SHARE * total:
        raise KenningError(
            f"cannot calibrate the unknown threshold: {len(bad)} of {total} held-out images of model {model} {what} "
            f"(first: {bad[0]}); put the data where the model's holdout.csv says, or pass --threshold"
        )
    if bad:
        warn(f"calibrating without {len(bad)} of {total} held-out images that {what}")


def calibrate_on_holdout(
    recognizer: Recognizer,
    holdout: pd.DataFrame,
    objective: str = "map@5",
    target_far: float = 0.05,
    thresholds: bool = True,
    resamples: int = 0,
    review: tuple[float, float] | None = None,
    bagged: bool = False,
    grouping: bool = False,
) -> HoldoutCalibration:
    """Protocol B on the held-out identities, through the query path: fit the fusion (with local
    matching) and, when `thresholds`, choose each path's unknown threshold by `objective`, its
    spread measured on `resamples` bootstrap draws of the identities (`bagged`: their median choice is
    the threshold) and, with `review` (review_far, review_miss), a review band around it; `grouping`
    (with local matching and thresholds): the batch grouping too (grouping_calibration.py)."""
    enrolled, queries = catalogue_split(holdout)
    read_enrolled = recognizer.read(enrolled["path"].tolist())
    read_queries = recognizer.read(queries["path"].tolist())
    unreadable, total = read_enrolled.errors + read_queries.errors, len(enrolled) + len(queries)
    refuse_unreadable_holdout(unreadable, total, "could not be read", recognizer.model_manifest.fingerprint)
    enrolled, queries = enrolled[read_enrolled.ok], queries[read_queries.ok]
    catalogue = recognizer.with_index(
        recognizer.index.with_enrolled(
            read_enrolled.vectors,
            enrolled["image_id"].tolist(),
            enrolled["label"].tolist(),
            read_enrolled.local,
            metadata_lists(enrolled),
        )
    )
    known = set(enrolled["label"])
    unknown = recognizer.unknown_label
    actual = [lab if lab in known else unknown for lab in queries["label"]]
    n_new = actual.count(unknown)
    if thresholds and (n_new == 0 or n_new == len(actual)):
        raise KenningError(
            f"cannot calibrate the unknown threshold: the held-out identities give {len(actual) - n_new} known and "
            f"{n_new} new queries, and a threshold needs both; pass --threshold"
        )
    if len(actual) < FEW_CALIBRATION_QUERIES:
        warn(f"the unknown threshold is calibrated on only {len(actual)} held-out queries: a rough estimate")
    views = with_metadata(queries)[VIEWPOINT].tolist()  # matched as `query` matches them
    matches = catalogue.match(read_queries.vectors, read_queries.local, views=views)
    votes = catalogue.votes.rank(matches.neighbours)
    identities = queries["label"].tolist()

    def calibrate(ranked: list[RankedLabels]) -> Calibration | None:
        if not thresholds:
            return None
        return calibrate_threshold(
            ranked,
            actual,
            unknown,
            objective,
            target_far,
            identities=identities,
            resamples=resamples,
            review=review,
            bagged=bagged,
        )

    embedding = calibrate(votes)
    if matches.candidates is None:
        return HoldoutCalibration(embedding, None, None)
    fusion = fit_fusion(
        matches.candidates,
        actual,
        queries=len(actual),
        model=recognizer.model_manifest.fingerprint,
        on="held-out training identities, protocol B against the gallery",
    )
    ranked = Fused(fusion, norm=catalogue.votes.norm).rank(matches.neighbours, matches.candidates)
    fused = calibrate(ranked)
    if not (grouping and fused):
        return HoldoutCalibration(embedding, fusion, fused)
    threshold = fused.threshold
    grouped = calibrate_grouping(
        catalogue, read_queries, views, ranked, actual, identities, threshold, objective, target_far
    )
    return HoldoutCalibration(embedding, fusion, fused, grouped)
