"""Issue 23 on the built-in demo set: are the non-landmark distractors answered unknown, and at what
cost to the landmarks?

The demo's workflow (scripts/demo.sh): `kenning demo-data`, the cpu-quick model (frozen backbone,
ArcFace) trained on `train`, one index of the `test` split with `--local sift`, evaluated
leave-one-out. The index is built once per decision rule (the threshold calibrated on the model's
held-out training identities for MAP@5, today's default, or for the balanced open-set score; raw or
cohort-normalised scores); for each: the share of distractor photos (unlabelled non-landmarks)
answered unknown first, and the landmark figures of the README's demo table.

    python benchmarks/demo_open_set.py [--work runs/bench-demo]

Writes benchmarks/results/demo_open_set.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from common import RESULTS, ROOT

from kenning.build import build_index
from kenning.config import load_config
from kenning.data.demo import write_demo_set
from kenning.data.readers import read_dataset, select_split
from kenning.eval.evaluate import evaluate
from kenning.recognizer import Recognizer
from kenning.training.run import train_embedding

FIGURES = ["recall@1", "map@5", "gap", "known_accuracy", "unknown_accuracy", "balanced"]
RULES = {  # name -> index settings
    "map@5 (default)": {"calibrate": "map@5"},
    "balanced": {"calibrate": "balanced"},
    "balanced, cohort-normalised": {"calibrate": "balanced", "normalise": "cohort"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-demo")
    args = parser.parse_args()
    data, model = args.work / "data", args.work / "model"
    if not (data / "labels.csv").is_file():
        write_demo_set(data)
    cfg = load_config(ROOT / "configs" / "cpu-quick.yaml", {"local.method": "sift"})
    cfg.train.cache_dir = str(args.work / "feature-cache")
    table = read_dataset(data)
    if not (model / "model.pt").is_file():
        train_embedding(cfg, select_split(table, "train"), model, resume=True)
    test = select_split(table, "test")
    rows = []
    for name, settings in RULES.items():
        out = args.work / f"index-{name.split()[0].strip(',')}{'-cohort' if 'normalise' in settings else ''}"
        if not (out / "manifest.json").is_file():
            build_index(model, test, dataclasses.replace(cfg.index, **settings), out, progress=False, local=cfg.local)
        result = evaluate(Recognizer.open(out, progress=False), test)
        q = result.per_query
        distractors = q[q["path"].str.contains("/distractors/")]
        first = distractors["predicted"].str.split().str[0]
        row = {
            "rule": name,
            "distractors": len(distractors),
            "distractors unknown first": float((first == result.unknown_label).mean()),
            **{k: result.metrics.get(k) for k in FIGURES},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "demo_open_set.json").write_text(json.dumps({"rows": rows}, indent=2))
    shown = ["distractors unknown first", *FIGURES]
    lines = [
        "# The demo's distractors and landmarks under each unknown rule (test split, leave-one-out, fused)",
        "",
        "| rule | " + " | ".join(shown) + " |",
        "|---|" + "---|" * len(shown),
    ]
    for r in rows:
        cells = ["-" if r.get(k) is None else f"{r[k]:.3f}" for k in shown]
        lines.append(f"| {r['rule']} | {' | '.join(cells)} |")
    lines += ["", f"{rows[0]['distractors']} distractor photos. Reproduce: `python benchmarks/demo_open_set.py`"]
    (RESULTS / "demo_open_set.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
