"""The batch grouping of an index chosen on its held-out identities (`--set index.grouping=true`).

The held-out queries are one batch: their links to each other are measured as `query --batch
--group` measures a user's (batch_grouping.py). Candidate link thresholds are quantiles of those
links' scores (a score, not a share, is what carries to another batch); for each, the queries are
grouped, the grouped answers' unknown threshold is calibrated by the index's objective, and the
best setting by that objective is kept. Answering photo by photo is a candidate too: where no link
helps the held-out identities, the stored grouping joins nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from kenning.batch_grouping import batch_links
from kenning.decision.grouping import Grouping, grouped, link_groups, sure_labels
from kenning.decision.threshold import Calibration, calibrate_threshold
from kenning.decision.voting import RankedLabels
from kenning.reader import Probes
from kenning.recognizer import Recognizer

QUANTILES = (1.0, 0.9, 0.7, 0.5, 0.3)  # link thresholds tried: quantiles of the held-out links (1.0: none)
BY_OBJECTIVE = {"map@5": "map5", "gap": "gap", "balanced": "balanced", "far": "known_accuracy"}  # what ranks them


def calibrate_grouping(
    catalogue: Recognizer,
    probes: Probes,
    views: Sequence[str],
    ranked: Sequence[RankedLabels],
    actual: Sequence[str],
    identities: Sequence[str],
    photo_threshold: float | None,
    objective: str = "balanced",
    target_far: float = 0.05,
) -> Grouping:
    """The grouping the held-out queries (`probes`, their `ranked` labels against the `catalogue`,
    `actual` answers and true `identities`) are answered best with; `photo_threshold`: the
    threshold a photo's own answer is sure at (decision/grouping.sure_labels)."""
    links = batch_links(catalogue, probes, views)
    settings = candidates(
        links, views, ranked, actual, identities, photo_threshold, catalogue.unknown_label, objective, target_far
    )
    return max(settings, key=lambda s: s[0])[1]  # the first best: ties keep the fewer joins


def candidates(
    links: tuple[np.ndarray, np.ndarray],
    views: Sequence[str],
    ranked: Sequence[RankedLabels],
    actual: Sequence[str],
    identities: Sequence[str],
    photo_threshold: float | None,
    unknown: str,
    objective: str = "balanced",
    target_far: float = 0.05,
) -> list[tuple[float, Grouping]]:
    """Each link setting of QUANTILES with its value by `objective` on the held-out queries, their
    `links` (batch_links) measured once."""
    partner, score = links
    sure = sure_labels(ranked, photo_threshold)
    settings = []
    for quantile in QUANTILES:
        link = None if quantile >= 1.0 else float(np.quantile(score, quantile))
        groups = link_groups(partner, score, link, sure)
        answers = grouped(ranked, views, groups)
        calibration = calibrate_threshold(answers, actual, unknown, objective, target_far, identities=identities)
        value = getattr(calibration.chosen, BY_OBJECTIVE[objective]) or 0.0
        grouping = Grouping(link, calibration.threshold, quantile, objective, _figures(calibration, groups, identities))
        settings.append((value, grouping))
    return settings


def _figures(calibration: Calibration, groups: np.ndarray, identities: Sequence[str]) -> dict[str, float]:
    """What the held-out queries measured with one setting: the chosen point, how many groups, and
    their purity (the share holding one identity)."""
    chosen = calibration.chosen
    table = pd.DataFrame({"group": groups, "identity": list(identities)})
    return {
        "balanced": chosen.balanced,
        "far": chosen.far,
        "known_accuracy": chosen.known_accuracy,
        "map@5": chosen.map5,
        "queries": calibration.queries,
        "groups": int(table["group"].nunique()),
        "purity": float((table.groupby("group")["identity"].nunique() == 1).mean()),
    }
