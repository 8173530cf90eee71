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

import kenning.holdout_calibration as holdout_calibration
from kenning.build import _outside
from kenning.data.readers import read_dataset, select_split
from kenning.decision.fusion import Candidates, fit_fusion
from kenning.decision.normalise import CohortNorm
from kenning.eval.evaluate import evaluate
from kenning.holdout_calibration import calibrate_on_holdout, readable_holdout
from kenning.recognizer import Matches, Recognizer

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


def capture(index: Path) -> tuple[dict[str, tuple[list[Candidates], list[str]]], str]:
    """The candidates (raw parts) of the held-out calibration queries and of protocol A's queries,
    and the index's unknown label."""
    recognizer = Recognizer.open(index)
    found: dict[str, tuple[list[Candidates], list[str]]] = {}
    fit = holdout_calibration.fit_fusion

    def keep(candidates: list[Candidates], actual: list[str], **kwargs: object) -> object:
        found["held-out"] = (candidates, list(actual))
        return fit(candidates, actual, **kwargs)

    holdout_calibration.fit_fusion = keep  # the calibration build-index runs, its candidates kept on the way
    try:
        holdout = readable_holdout(recognizer.index.manifest.model_dir, recognizer.model_manifest.fingerprint)
        calibrate_on_holdout(recognizer, _outside(holdout, recognizer.index.table), thresholds=False)
    finally:
        holdout_calibration.fit_fusion = fit
    recognizer.configure(local=True, viewpoints="compatible")
    rank, matched = recognizer.rank, []

    def rank_kept(matches: Matches) -> list:
        matched.append(matches.candidates)  # evaluate's one match of all queries
        return rank(matches)

    recognizer.rank = rank_kept
    images = select_split(read_dataset(SHARED / "nyala"), "eval")
    result = evaluate(recognizer, images, closed_set=True, exclude_sighting=True)
    found["protocol A"] = (matched[0], result.per_query["actual"].tolist())
    return found, recognizer.unknown_label


def normalised(candidates: list[Candidates], norms: dict[str, CohortNorm]) -> list[Candidates]:
    """The same candidates, each part named in `norms` normalised within its query."""
    return [
        Candidates(c.labels, {p: norms[p](v) if p in norms else np.asarray(v, float) for p, v in c.scores.items()})
        for c in candidates
    ]


def recall_at_1(candidates: list[Candidates], calibrated: list[Scores], actual: list[str], rule: Callable) -> float:
    """Queries whose first identity is right (ties broken as rank_fused breaks them: raw local, then global)."""
    hits = [
        c.labels[np.lexsort((-c.scores["global"], -c.scores["local"], -rule(p)))[0]] == a
        for c, p, a in zip(candidates, calibrated, actual, strict=True)
    ]
    return float(np.mean(hits))


def scored(sides: dict[str, tuple[list[Candidates], list[str]]], unknown: str) -> list[dict]:
    """Per normalisation and rule: calibrators fitted on the held-out pairs, Recall@1 of each side's known queries."""
    known = {side: [i for i, a in enumerate(actual) if a != unknown] for side, (_, actual) in sides.items()}
    rows = []
    for norm_name, norms in NORMS.items():
        held, held_actual = sides["held-out"]
        fusion = fit_fusion(normalised(held, norms), held_actual)  # build-index's fit, on the normalised parts
        calibrated = {
            side: [
                {p: cal(c.scores[p]) for p, cal in fusion.calibrators.items()}
                for c in normalised([candidates[i] for i in known[side]], norms)
            ]
            for side, (candidates, _) in sides.items()
        }
        for rule_name, combine in COMBINE.items():
            row = {"normalised": norm_name, "rule": rule_name}
            for side, (candidates, actual) in sides.items():
                picks, truths = [candidates[i] for i in known[side]], [actual[i] for i in known[side]]
                row[side] = recall_at_1(picks, calibrated[side], truths, combine)
                row[f"{side} queries"] = len(picks)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    args = parser.parse_args()
    rows = scored(*capture(args.index))
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
