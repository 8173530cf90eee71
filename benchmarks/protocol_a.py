"""Protocol A of ../shared/data/README.md: untrained ImageNet backbone vs Kenning's trained model.

Trains on the `train` split only (the unknown threshold is calibrated on held-out train
identities), indexes the evaluation split and queries every image against all the others
(leave-one-out, its own sighting left out). Writes JSON and Markdown to benchmarks/results/.

    python benchmarks/protocol_a.py --dataset nyala
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from common import ROOT, SHARED

from kenning.build import build_index
from kenning.config import load_config
from kenning.data.readers import read_dataset, select_split
from kenning.eval.evaluate import evaluate
from kenning.recognizer import Recognizer
from kenning.training.run import train_embedding


def run(name: str, data: Path, overrides: dict, work: Path, flip_tta: bool) -> dict:
    cfg = load_config(None, {**overrides, "index.flip_tta": flip_tta})
    table = read_dataset(data)
    t0 = time.perf_counter()
    result = train_embedding(cfg, select_split(table, "train"), work / f"{name}-model")
    train_s = time.perf_counter() - t0
    index_dir = work / f"{name}-index"
    build_index(work / f"{name}-model", select_split(table, "eval"), cfg.index, index_dir)
    recognizer = Recognizer.open(index_dir)
    queries = select_split(table, "eval")
    closed = evaluate(recognizer, queries, closed_set=True, exclude_sighting=True).metrics
    opened = evaluate(recognizer, queries).metrics
    return {
        "setting": name,
        "train_seconds": round(train_s, 1),
        "epochs": cfg.train.epochs,
        "image_size": cfg.model.image_size,
        "flip_tta": flip_tta,
        "epoch_losses": [round(v, 3) for v in result.epoch_losses],
        "recall@1": closed["recall@1"],
        "recall@5": closed["recall@5"],
        "map@5": closed["map@5"],
        "queries": closed["queries"],
        "open_set_map@5": opened["map@5"],
        "open_set_gap": opened["gap"],
        "threshold": opened["threshold"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="nyala", choices=["nyala", "lions"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    args = parser.parse_args()
    data = SHARED / args.dataset
    work = args.work / args.dataset
    common = {"model.image_size": args.image_size}
    rows = [
        run("untrained", data, {**common, "train.epochs": 0, "model.embedding_dim": 0}, work, flip_tta=True),
        run("arcface", data, {**common, "train.epochs": args.epochs}, work, flip_tta=False),
    ]
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"protocol_a_{args.dataset}_e{args.epochs}_s{args.image_size}"
    (out / f"{stem}.json").write_text(json.dumps({"rows": rows, "peak_rss_gib": round(peak_gib, 2)}, indent=2))
    cols = [
        "setting",
        "epochs",
        "image_size",
        "flip_tta",
        "train_seconds",
        "recall@1",
        "recall@5",
        "map@5",
        "queries",
        "open_set_map@5",
        "open_set_gap",
    ]
    lines = [
        f"# Protocol A on {args.dataset} (test split, leave-one-out)",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for row in rows:
        lines.append(
            "| "
            + " | ".join(
                f"{row[c]:.4f}" if isinstance(row[c], float) and c != "train_seconds" else str(row[c]) for c in cols
            )
            + " |"
        )
    lines += [
        "",
        f"Peak memory (RSS) {peak_gib:.2f} GiB. Reproduce: `python benchmarks/protocol_a.py "
        f"--dataset {args.dataset} --epochs {args.epochs} --image-size {args.image_size}`",
    ]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
