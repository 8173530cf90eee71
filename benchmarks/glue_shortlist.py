"""Issue 24 benchmark: does the learned matcher re-rank a longer shortlist better than LNBNN?

Protocol A on an index `local_matching.py` built with a learned family and `local.glue` (e.g.
`reid-index-disk_glue3`): every gallery photo queries the index with its own sighting excluded,
its stored local features standing for a fresh extraction (the same extractor, the same photo), and
the learned matcher re-matches LNBNN's best B candidates (B = `--glue`, beyond the index's own).
Reported, Recall@1 over the queries with a match: each part's own ranking (global, LNBNN, the
matcher's summed confidence), the matcher's best among LNBNN's top 3 / 5 / B, the fused ranking
with the index's calibrators, and Recall@5 of the fused ranking.

    python benchmarks/glue_shortlist.py --index WORK/nyala/reid-index-disk_glue3 --glue 10

Writes benchmarks/results/glue_shortlist_<index folder>_b<B>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import RESULTS
from tqdm import tqdm

from kenning.decision.fusion import MATCHES
from kenning.eval.evaluate import _sighting_ids
from kenning.recognizer import Recognizer


def run(index_dir: Path, glue: int) -> list[dict]:
    recognizer = Recognizer.open(index_dir, progress=False)
    index = recognizer.index
    index.manifest.local["glue"] = glue  # this run's B; the calibrators stay those the index was built with
    table = index.table
    own = table["id"].to_numpy()
    exclude = _sighting_ids(table, table, own)
    labels = table["label"].to_numpy().astype(str)
    counts = table["label"].value_counts()
    records = []
    for i in tqdm(range(len(table)), desc=f"glue on {glue}", unit="query"):
        out = exclude[i][exclude[i] >= 0]
        if counts[labels[i]] - int((index.labels_of(out) == labels[i]).sum()) <= 0:
            continue  # no other sighting of its identity: protocol A leaves it out
        matches = recognizer.match(
            index.vectors_of(own[i : i + 1]), index.local_of(own[i : i + 1]), exclude=exclude[i : i + 1]
        )
        candidates = matches.candidates[0]
        records.append(
            {
                "actual": labels[i],
                "labels": list(candidates.labels),
                "scores": {k: v.tolist() for k, v in candidates.scores.items()},
                "fused": list(recognizer.rank(matches)[0].labels[:5]),
            }
        )
    return records


def figures(records: list[dict], glue: int) -> dict[str, float]:
    n = len(records)

    def best(labels: np.ndarray, scores: np.ndarray, among: np.ndarray) -> str:
        return str(labels[among[np.argmax(scores[among])]]) if len(among) else ""

    out: dict[str, float] = {}
    for part in records[0]["scores"]:
        out[f"{part} alone"] = sum(
            best(np.array(r["labels"]), np.array(r["scores"][part]), np.arange(len(r["labels"]))) == r["actual"]
            for r in records
        )
    for b in sorted({3, 5, glue}):
        hits = inside = 0
        for r in records:
            labels, lnbnn = np.array(r["labels"]), np.array(r["scores"]["local"])
            top = np.argsort(-lnbnn, kind="stable")[:b]
            inside += r["actual"] in labels[top]
            hits += best(labels, np.array(r["scores"][MATCHES]), top) == r["actual"]
        out[f"matcher's best of LNBNN's top {b}"] = hits
        out[f"right identity in LNBNN's top {b}"] = inside
    out["fused"] = sum(r["fused"][:1] == [r["actual"]] for r in records)
    out["fused recall@5"] = sum(r["actual"] in r["fused"] for r in records)
    return {k: round(v / n, 3) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--glue", type=int, default=10)
    args = parser.parse_args()
    started = time.perf_counter()
    records = run(args.index, args.glue)
    seconds = round(time.perf_counter() - started)
    result = {"index": str(args.index), "glue": args.glue, "queries": len(records), "seconds": seconds}
    result["recall@1"] = figures(records, args.glue)
    stem = f"glue_shortlist_{args.index.name}_b{args.glue}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# The learned matcher on LNBNN's top {args.glue} ({args.index.name}, protocol A, {len(records)} queries)",
        "",
        "| ranking | Recall@1 |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in result["recall@1"].items()),
        "",
        f"{seconds} s on 2 cores. Reproduce: `python benchmarks/glue_shortlist.py --index WORK/nyala/{args.index.name} "
        f"--glue {args.glue}`",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
