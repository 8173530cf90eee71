"""Issue 12 benchmark: the local stage (foreground RootSIFT + LNBNN) beside the embedding, and fused.

Protocols A (re-identification across sightings, the query's own sighting excluded) and B
(catalogue with new individuals) of ../shared/data/README.md, each on one index built with
`--local sift`: the fused row is what Kenning answers; the embedding-only row is the same index
queried with `--no-local`; the local-only row ranks by the LNBNN scores of the same run. The model is
the frozen-backbone triplet embedding of benchmarks/baselines.py, trained on `train` only; fusion
calibrators and thresholds are fitted on its held-out training identities.

    python benchmarks/local_matching.py --dataset nyala
    python benchmarks/local_matching.py --dataset lions --image-size 128 --set local.image_side=256 ...

Writes benchmarks/results/local_matching_<dataset>[_<tag>].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import RESULTS, ROOT, SHARED

from kenning.config import Config, load_config, parse_assignment
from kenning.data.readers import read_dataset, select_split
from kenning.data.splits import catalogue_split
from kenning.eval.evaluate import EvalResult, evaluate
from kenning.eval.protocols import run_protocol
from kenning.metrics.retrieval import map_at_k
from kenning.recognizer import Recognizer
from kenning.training.run import train_embedding

TRAIN = {"train.mode": "frozen", "train.epochs": 40, "loss.name": "triplet", "loss.miner": "batch_hard"}
FIGURES = ["recall@1", "recall@5", "map@r", "map@5", "gap", "known_accuracy", "unknown_accuracy"]


def local_only(result: EvalResult) -> dict[str, float]:
    """Recall@1/5 and MAP@5 of the identities LNBNN scores highest (closed set: no unknown), from
    the fused run's own local scores."""
    q = result.per_query
    known = q["known"].to_numpy()
    actual = q["actual"].to_numpy()
    top1 = np.array([bool(s.labels) and s.labels[0] == a for s, a in zip(result.local, actual, strict=True)])
    top5 = np.array([a in s.labels[:5] for s, a in zip(result.local, actual, strict=True)])
    return {
        "recall@1": float(top1[known].mean()),
        "recall@5": float(top5[known].mean()),
        "map@5": map_at_k(list(actual[known]), [s.labels[:5] for s, k in zip(result.local, known, strict=True) if k]),
    }


def setup(description: str) -> tuple[argparse.Namespace, Config, Path, Path, pd.DataFrame]:
    """The arguments both local-stage benchmarks take, their config, the work folder, the model
    (trained on `train` when not there yet) and the evaluation split."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", default="nyala", choices=["nyala", "lions"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--protocols", default="reid,catalogue")
    parser.add_argument("--set", action="append", default=[], help="config override, k=v (local.*, index.*)")
    parser.add_argument("--tag", default="")
    parser.add_argument("--reuse", action="store_true", help="score the indexes an earlier run kept, do not rebuild")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-local")
    args = parser.parse_args()
    overrides = {"model.image_size": args.image_size, "local.method": "sift", "index.unknown_label": "new_whale"}
    overrides.update(dict(parse_assignment(a) for a in args.set))
    cfg = load_config(None, {**TRAIN, **overrides})
    table = read_dataset(SHARED / args.dataset)
    work = args.work / args.dataset
    model = work / f"model-s{args.image_size}"
    if not (model / "model.pt").is_file():
        train_embedding(cfg, select_split(table, "train"), model, resume=True)
    return args, cfg, work, model, select_split(table, "eval")


def reproduce(script: str, args: argparse.Namespace) -> str:
    """The command line that repeats a run of a benchmark taking setup()'s arguments."""
    sets = "".join(f" --set {a}" for a in args.set)
    tag = f" --tag {args.tag}" if args.tag else ""
    return f"python benchmarks/{script} --dataset {args.dataset} --image-size {args.image_size}{sets}{tag} --work WORK"


def main() -> None:
    args, cfg, work, model, images = setup(__doc__.splitlines()[0])
    rows = []
    for protocol in args.protocols.split(","):
        index_dir = work / f"{protocol}-index{'-' + args.tag if args.tag else ''}"
        closed = protocol == "reid"
        queries = images if closed else catalogue_split(images)[1]
        started = time.perf_counter()
        if args.reuse and (index_dir / "manifest.json").is_file():  # the index of an earlier run, scored again
            fused = evaluate(Recognizer.open(index_dir, progress=False), queries, closed, exclude_sighting=closed)
        else:
            fused = run_protocol(protocol, model, images, cfg.index, index_dir, progress=False, local=cfg.local)
        seconds = time.perf_counter() - started
        recognizer = Recognizer.open(index_dir, progress=False)
        recognizer.configure(local=False)
        embedding = evaluate(recognizer, queries, closed_set=closed, exclude_sighting=closed)
        for system, result in (("embedding only", embedding), ("fused (Kenning)", fused)):
            rows.append(
                {
                    "protocol": protocol,
                    "system": system,
                    **{k: result.metrics.get(k) for k in ["queries", "known_queries", *FIGURES]},
                    "seconds": round(seconds, 1) if system.startswith("fused") and not args.reuse else None,
                }
            )
        rows.append({"protocol": protocol, "system": "local only (LNBNN)", **local_only(fused)})
        print(json.dumps(rows[-3:], indent=1), flush=True)
    meta = {
        "dataset": args.dataset,
        "image_size": args.image_size,
        "train": TRAIN,
        "config": {"local": cfg.local.__dict__, "index": cfg.index.__dict__},
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    stem = f"local_matching_{args.dataset}{'_' + args.tag if args.tag else ''}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.reuse and (RESULTS / f"{stem}.json").is_file():  # keep the build times the first run measured
        before = {
            (r["protocol"], r["system"]): r.get("seconds")
            for r in json.loads((RESULTS / f"{stem}.json").read_text())["rows"]
        }
        for r in rows:
            r["seconds"] = r.get("seconds") or before.get((r["protocol"], r["system"]))
        earlier = json.loads((RESULTS / f"{stem}.json").read_text())["rows"]
        rows = [r for r in earlier if r["protocol"] not in args.protocols.split(",")] + rows
    (RESULTS / f"{stem}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    lines = [
        f"# Local matching on {args.dataset} ({len(images)} evaluation images)",
        "",
        f"local: `{json.dumps(cfg.local.__dict__)}`; peak RSS {meta['peak_rss_gib']} GiB",
        "",
        "| protocol | system | " + " | ".join(FIGURES) + " | build + eval s |",
        "|---|---|" + "---|" * (len(FIGURES) + 1),
    ]
    for r in rows:
        cells = ["-" if r.get(k) is None else f"{r[k]:.3f}" for k in FIGURES]
        lines.append(f"| {r['protocol']} | {r['system']} | {' | '.join(cells)} | {r.get('seconds') or '-'} |")
    lines += ["", f"Reproduce: `{reproduce('local_matching.py', args)}`"]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
