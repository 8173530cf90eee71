"""Issue 23 benchmark: does the unknown decision transfer from the held-out identities to a new gallery?

Protocol B (catalogue with new individuals) of ../shared/data/README.md on the index
local_matching.py builds (`--local sift`, frozen-backbone triplet model trained on `train`). Each
query is matched once, both the model's held-out training identities (as build-index calibrates:
their first sightings enrolled into the gallery, the rest query it) and the evaluation split; then
every decision rule is calibrated on the held-out queries only and applied to the evaluation split:
the embedding's k-NN vote and the fused probability, raw or cohort-normalised
(decision/normalise.py), the threshold chosen for MAP@5 (today's default) or for the balanced
open-set score, that one either the best on the held-out queries or bagged (the median of the
thresholds 200 bootstrap draws of the held-out identities choose). Reported: the false-accept rate
on both sides (the transfer) with its interval over bootstrap draws of that side's new identities,
BAKS / BAUS / balanced, known and new accuracy, MAP@5, the review band's share of queries, and the
known queries' closed-set Recall@1 (their first identity, no threshold). Each rule also answers per
encounter (decision/encounters.py: the photos of one sighting answered once, issue 22), its
threshold calibrated the same way on the held-out identities' encounters. The test oracle is the balanced
score of the best threshold chosen on the test queries themselves: where it misses a target, the
matching does, not the calibration.

    python benchmarks/open_set.py --dataset nyala
    python benchmarks/open_set.py --dataset lions --image-size 128 --set local.image_side=256 \
        --set local.foreground=0.0 --set local.k=3

With `--tag NAME` the index is local_matching.py's of that tag (built here when missing), so
`--set local.method=sift+disk --tag sift_disk` scores that run's catalogue index (or encounters.py's
of that tag, built the same way).
Another model: put it at WORK/<dataset>/model-s<size> and pass `--work WORK --tag NAME` (the
untrained row: `kenning train-embed --data ../shared/data/nyala --out
runs/bench-untrained/nyala/model-s224 --epochs 0 --embedding-dim 0 --image-size 224 --set
train.holdout_fraction=0.3`).

Writes benchmarks/results/open_set_<dataset>[_<tag>].{json,md}.
"""

from __future__ import annotations

import argparse
import json
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
from common import RESULTS
from local_matching import setup

from kenning.config import Config
from kenning.data.metadata import ENCOUNTER, VIEWPOINT, metadata_lists, with_metadata
from kenning.data.splits import catalogue_split
from kenning.decision.encounters import combine, encounter_rows
from kenning.decision.normalise import CohortNorm
from kenning.decision.rules import Fused, Votes
from kenning.decision.threshold import calibrate_threshold
from kenning.decision.voting import RankedLabels, place_unknown
from kenning.embeddings.checkpoint import load_holdout
from kenning.eval.protocols import run_protocol
from kenning.metrics.answers import answer_metrics
from kenning.recognizer import GLOBAL_CANDIDATES, Recognizer

FIGURES = ["far", "balanced", "baks", "baus", "known_accuracy", "unknown_accuracy", "map@5", "review"]
ANSWERS = ("photo", "encounter")
REVIEW = (0.02, 0.05)  # the index defaults: index.review_far, index.review_miss
BAGS = 200  # bootstrap draws of the held-out identities whose median threshold is the bagged choice
DRAWS = 1000  # bootstrap draws of a side's new identities for the interval of its false-accept rate


def matched(recognizer: Recognizer, table, known: set[str]) -> dict:
    """One side's queries matched once (both stages, by viewpoint), with their truths."""
    probes = recognizer.read(table["path"].tolist())
    table = with_metadata(table[probes.ok])
    views = table[VIEWPOINT].tolist()
    matches = recognizer.match(probes.vectors, probes.local, width=GLOBAL_CANDIDATES, views=views)
    actual = [lab if lab in known else recognizer.unknown_label for lab in table["label"]]
    encounters = [e or f"\x00{i}" for i, e in enumerate(table[ENCOUNTER])]  # no encounter: a photo of its own
    return {"matches": matches, "actual": actual, "identities": table["label"].tolist(), "views": views,
            "encounters": encounters, "probes": probes}  # fmt: skip


def answered(rule, side: dict, answer: str) -> tuple[list[RankedLabels], list[str], list[str]]:
    """A side's ranked labels, truths and identities, per photo or per encounter (its photos combined)."""
    ranked = rule.rank(side["matches"].neighbours, side["matches"].candidates)
    if answer == "photo":
        return ranked, side["actual"], side["identities"]
    rows = list(encounter_rows(side["encounters"]).values())
    combined = [combine([ranked[i] for i in r], [side["views"][i] for i in r]) for r in rows]
    return combined, [side["actual"][r[0]] for r in rows], [side["identities"][r[0]] for r in rows]


def figures(ranked: list[RankedLabels], actual: list[str], identities: list[str], calibration, unknown: str) -> dict:
    answers = [place_unknown(r, calibration.threshold, unknown) for r in ranked]
    truth = np.array(actual, dtype=object)
    ids = [f"{i:06d}" for i in range(len(truth))]
    m = answer_metrics(truth, truth != unknown, answers, ids, unknown, calibration.threshold, identities)
    band = calibration.review
    review = np.mean([band.decide(a.best_similarity) == "review" for a in answers]) if band else 0.0
    first = np.array([bool(r.labels) and r.labels[0] == a for r, a in zip(ranked, actual, strict=True)])
    closed = float(first[truth != unknown].mean())  # the known queries' first identity, no threshold (issue 24)
    accepted = [bool(a.labels) and a.labels[0] != unknown for a, t in zip(answers, actual, strict=True) if t == unknown]
    low, high = far_interval(np.array(accepted), [i for i, t in zip(identities, actual, strict=True) if t == unknown])
    return {**{k: m[k] for k in FIGURES if k in m}, "far": m["false_accept_rate"], "far 5%": low, "far 95%": high,
            "review": float(review), "closed_recall@1": closed}  # fmt: skip


def far_interval(accepted: np.ndarray, identities: list[str], seed: int = 0) -> tuple[float, float]:
    """5% and 95% points of a side's false-accept rate over bootstrap draws of its new identities: a few
    new identities make the rate a coarse estimate, and a transfer gap inside it is no evidence."""
    names, inverse = np.unique(np.array(identities, dtype=object), return_inverse=True)
    rng = np.random.default_rng(seed)
    accepts, counts = np.bincount(inverse, accepted, len(names)), np.bincount(inverse, minlength=len(names))
    draws = rng.integers(0, len(names), (DRAWS, len(names)))
    rates = accepts[draws].sum(1) / counts[draws].sum(1)
    return float(np.quantile(rates, 0.05)), float(np.quantile(rates, 0.95))


def oracle_balanced(ranked: list[RankedLabels], actual: list[str], identities: list[str], unknown: str) -> float:
    """The balanced score of the best single threshold chosen on these queries themselves: an upper bound
    of what any calibrated threshold reaches with this matching, not a result (it sees the answers)."""
    calibration = calibrate_threshold(ranked, actual, unknown, "balanced", identities=identities)
    return figures(ranked, actual, identities, calibration, unknown)["balanced"]


def catalogues(
    args: argparse.Namespace, cfg: Config, work: Path, model: Path, images: pd.DataFrame
) -> dict[str, tuple[Recognizer, pd.DataFrame, set[str]]]:
    """Each side's catalogue, queries and known identities: the held-out identities enrolled into an
    in-memory copy of the index (as build-index calibrates), and the evaluation split's own index."""
    tag = "-" + args.tag if args.tag else ""
    index_dir = work / f"catalogue-index{tag}"  # local_matching.py's, same tag
    if not (index_dir / "manifest.json").is_file() and (work / f"catalogue-views-index{tag}/manifest.json").is_file():
        index_dir = work / f"catalogue-views-index{tag}"  # encounters.py's: the same build, same settings
    if not (index_dir / "manifest.json").is_file():
        run_protocol("catalogue", model, images, cfg.index, index_dir, progress=False, local=cfg.local)
    recognizer = Recognizer.open(index_dir, progress=False)
    holdout = load_holdout(model)
    holdout = holdout[~holdout["label"].isin(set(images["label"]))]
    enrolled, held_queries = catalogue_split(holdout)
    read = recognizer.read(enrolled["path"].tolist())
    enrolled = enrolled[read.ok]
    metadata = metadata_lists(enrolled)
    with_held = recognizer.with_index(
        recognizer.index.with_enrolled(
            read.vectors, enrolled["image_id"].tolist(), enrolled["label"].tolist(), read.local, metadata
        )
    )
    gallery, test_queries = catalogue_split(images)
    return {
        "held-out": (with_held, held_queries, set(enrolled["label"])),
        "test": (recognizer, test_queries, set(gallery["label"])),
    }


def main() -> None:
    args, cfg, work, model, images = setup(__doc__.splitlines()[0])
    sides_of = catalogues(args, cfg, work, model, images)
    sides = {side: matched(*parts) for side, parts in sides_of.items()}
    recognizer = sides_of["test"][0]
    unknown = recognizer.unknown_label
    fusion = recognizer.fused.fusion  # fitted at build time on the held-out identities only
    rows = []
    for norm_name, norm in (("raw", None), ("cohort", CohortNorm(cfg.index.cohort_skip, cfg.index.cohort_size))):
        votes = Votes(recognizer.votes.k, recognizer.votes.power, norm=norm)
        for (system, rule), answer in product((("embedding", votes), ("fused", Fused(fusion, norm=norm))), ANSWERS):
            answers = {side: answered(rule, data, answer) for side, data in sides.items()}
            ceiling = oracle_balanced(*answers["test"], unknown)
            ranked, actual, identities = answers["held-out"]
            for objective, bagged in (("map@5", False), ("balanced", False), ("balanced", True)):
                calibration = calibrate_threshold(
                    ranked, actual, unknown, objective, identities=identities, review=REVIEW,
                    resamples=BAGS if bagged else 0, bagged=bagged,
                )  # fmt: skip
                name = f"{objective}, bagged" if bagged else objective
                row = {"system": system, "scores": norm_name, "answer": answer, "objective": name,
                       "test oracle balanced": ceiling}  # fmt: skip
                for side, parts in answers.items():
                    row.update({f"{side} {k}": v for k, v in figures(*parts, calibration, unknown).items()})
                rows.append(row)
                print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"open_set_{args.dataset}{'_' + args.tag if args.tag else ''}"
    meta = {"dataset": args.dataset, "cohort": [cfg.index.cohort_skip, cfg.index.cohort_size], "review": REVIEW}
    (RESULTS / f"{stem}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    shown = ["held-out far", "held-out far 5%", "held-out far 95%", "test far", "test far 5%", "test far 95%",
             "test balanced", "test oracle balanced", "test baks", "test baus", "test known_accuracy",
             "test unknown_accuracy", "test map@5", "test review", "test closed_recall@1"]  # fmt: skip
    lines = [
        f"# Open-set decisions on {args.dataset}, protocol B: calibrated on held-out identities, applied to test",
        "",
        "| system | scores | answer | threshold for | " + " | ".join(shown) + " |",
        "|---|---|---|---|" + "---|" * len(shown),
    ]
    for r in rows:
        cells = ["-" if r.get(k) is None else f"{r[k]:.3f}" for k in shown]
        lines.append(f"| {r['system']} | {r['scores']} | {r['answer']} | {r['objective']} | {' | '.join(cells)} |")
    sets = "".join(f" --set {a}" for a in args.set)
    command = f"python benchmarks/open_set.py --dataset {args.dataset} --image-size {args.image_size}{sets}"
    if args.tag:  # another model than local_matching.py's, placed in --work beforehand (see the docstring)
        command += f" --tag {args.tag} --work WORK"
    lines += [
        "",
        "far 5% / 95%: the false-accept rate's interval over bootstrap draws of the side's new identities. "
        "test oracle balanced: the best balanced score of any single threshold chosen on the test queries "
        "themselves, the ceiling of every calibration with this matching.",
        "",
        f"Reproduce: `{command}`",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
