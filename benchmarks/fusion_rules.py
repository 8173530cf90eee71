"""Issue 24 benchmark: would another way of fusing the global and local scores rank better?

Today (decision/fusion.py, WildFusion's rule) each part is mapped to P(same identity) by an
isotonic calibrator fitted on the held-out identities' candidate pairs, and the calibrated parts
are averaged. Alternatives, each fitted on the same held-out pairs: summed log-odds (naive Bayes:
the parts as independent evidence), a weighted mean leaning on the stronger local part, and each
query's raw part scores cohort-normalised (decision/normalise.py) before they are calibrated, so a
query with many keypoints (large LNBNN sums for every candidate) is measured against its own
impostors. Scored: Recall@1 of the held-out identities' known queries (what build-index fits on:
the training side, the only side a rule may be chosen on) and of the index's protocol A queries
(own sighting excluded, a flank against that flank).

    python benchmarks/fusion_rules.py --index WORK/nyala/reid-views-index-sift_disk_sp30_nsum

Writes benchmarks/results/fusion_rules_<index name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import RESULTS, SHARED

import kenning.build as build
from kenning.build import _outside, _readable_holdout, calibrate_on_holdout
from kenning.data.readers import read_dataset, select_split
from kenning.decision.fusion import Calibrator, Candidates
from kenning.decision.normalise import CohortNorm
from kenning.eval.evaluate import evaluate
from kenning.recognizer import Recognizer

Scores = dict[str, np.ndarray]
NORMS: dict[str, dict[str, CohortNorm]] = {
    "raw": {},
    "local cohort (1, 20)": {"local": CohortNorm(1, 20)},
    "local cohort (5, 50)": {"local": CohortNorm(5, 50)},
    "both cohort (1, 20)": {"local": CohortNorm(1, 20), "global": CohortNorm(1, 20)},
}
EPS = 1e-3  # calibrated probabilities are clipped to [EPS, 1 - EPS] before log-odds (isotonic gives 0 and 1)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


COMBINE: dict[str, Callable[[Scores], np.ndarray]] = {
    "mean (today)": lambda c: (c["global"] + c["local"]) / 2,
    "summed log-odds": lambda c: _logit(c["global"]) + _logit(c["local"]),
    "0.3 global + 0.7 local": lambda c: 0.3 * c["global"] + 0.7 * c["local"],
}


def capture(index: Path) -> dict[str, tuple[list[Candidates], list[str]]]:
    """The candidates (raw parts) of the held-out calibration queries and of protocol A's queries."""
    recognizer = Recognizer.open(index)
    found: dict[str, tuple[list[Candidates], list[str]]] = {}
    fit = build.fit_fusion

    def keep(candidates: list[Candidates], actual: list[str], **kwargs: object) -> object:
        found["held-out"] = (candidates, list(actual))
        return fit(candidates, actual, **kwargs)

    build.fit_fusion = keep  # the calibration build-index runs, its candidates kept on the way
    try:
        holdout = _readable_holdout(recognizer.index.manifest.model_dir, recognizer.model_manifest.fingerprint)
        calibrate_on_holdout(recognizer, _outside(holdout, recognizer.index.table), thresholds=False)
    finally:
        build.fit_fusion = fit
    recognizer.configure(local=True, viewpoints="compatible")
    rank = recognizer.rank
    matched: list = []
    recognizer.rank = lambda matches: (matched.append(matches.candidates), rank(matches))[1]
    images = select_split(read_dataset(SHARED / "nyala"), "eval")
    result = evaluate(recognizer, images, closed_set=True, exclude_sighting=True)
    found["protocol A"] = (matched[0], result.per_query["actual"].tolist())
    return found


def normalised(candidates: list[Candidates], norms: dict[str, CohortNorm]) -> list[Scores]:
    return [{p: norms[p](v) if p in norms else np.asarray(v, float) for p, v in c.scores.items()} for c in candidates]


def recall_at_1(candidates: list[Candidates], calibrated: list[Scores], actual: list[str], rule: Callable) -> float:
    """Queries whose first identity is right (ties broken as rank_fused breaks them: raw local, then global)."""
    hits = [
        c.labels[np.lexsort((-c.scores["global"], -c.scores["local"], -rule(p)))[0]] == a
        for c, p, a in zip(candidates, calibrated, actual, strict=True)
    ]
    return float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    args = parser.parse_args()
    sides = capture(args.index)
    unknown = Recognizer.open(args.index, progress=False).unknown_label
    rows = []
    for norm_name, norms in NORMS.items():
        held, held_actual = sides["held-out"]
        held_scores = normalised(held, norms)
        same = np.concatenate([np.array(c.labels, dtype=object) == a for c, a in zip(held, held_actual, strict=True)])
        parts = ("global", "local")
        calibrators = {p: Calibrator.fit(np.concatenate([s[p] for s in held_scores]), same) for p in parts}
        for rule_name, combine in COMBINE.items():
            row = {"normalised": norm_name, "rule": rule_name}
            for side, (candidates, actual) in sides.items():
                scores = normalised(candidates, norms)
                known = [i for i, a in enumerate(actual) if a != unknown]
                calibrated = [{p: calibrators[p](scores[i][p]) for p in calibrators} for i in known]
                picks = [candidates[i] for i in known]
                row[side] = recall_at_1(picks, calibrated, [actual[i] for i in known], combine)
                row[f"{side} queries"] = len(known)
            rows.append(row)
            print(json.dumps(row), flush=True)
    stem = f"fusion_rules_{args.index.name}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"index": args.index.name, "rows": rows}, indent=2))
    lines = [
        f"# Fusion rules on {args.index.name}: Recall@1 of known queries",
        "",
        f"| parts normalised | rule | held-out ({rows[0]['held-out queries']} known) "
        f"| protocol A ({rows[0]['protocol A queries']}) |",
        "|---|---|---|---|",
        *(f"| {r['normalised']} | {r['rule']} | {r['held-out']:.3f} | {r['protocol A']:.3f} |" for r in rows),
        "",
        f"Reproduce: `python benchmarks/fusion_rules.py --index WORK/nyala/{args.index.name}`",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
