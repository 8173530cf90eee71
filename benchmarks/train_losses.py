"""Issue 3 benchmark: every loss family x {frozen-backbone cache, full fine-tune} on protocol A.

Protocol A of ../shared/data/README.md: train on `train` only (the best epoch is chosen on
held-out train identities), then every image of the evaluation split (nyala: test, lions: val)
queries all the others. Each setting runs in its own process so its peak memory is its own;
finished settings are kept in the results file and skipped on a re-run (delete it to start over).

    python benchmarks/train_losses.py --dataset nyala --finetune-epochs 3
    python benchmarks/train_losses.py --dataset lions --image-size 128 --finetune-epochs 10
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, SHARED

LOSSES = {
    "arcface": {"loss.name": "arcface"},
    "subcenter_arcface_dynamic": {"loss.name": "subcenter_arcface", "loss.dynamic_margin": True},
    "triplet_batch_hard": {"loss.name": "triplet", "loss.miner": "batch_hard"},
    "contrastive_pairs": {"loss.name": "contrastive", "loss.miner": "none"},
}
COLUMNS = ["setting", "mode", "epochs", "best_epoch", "recall@1", "recall@5", "map@r", "map@5", "train_s", "peak_gib"]


def run_one(dataset: str, setting: str, mode: str, args: argparse.Namespace) -> dict:
    """Train (or not, for the untrained rows), embed the evaluation split, score it leave-one-out."""
    from kenning.config import load_config, parse_assignment
    from kenning.data.readers import read_dataset, select_split
    from kenning.data.splits import sighting_key
    from kenning.data.transforms import eval_transform
    from kenning.embeddings.checkpoint import load_model
    from kenning.embeddings.device import select_device
    from kenning.embeddings.inference import embed_paths, manifest_transform
    from kenning.embeddings.model import create_model, data_config
    from kenning.training.run import train_embedding
    from kenning.training.validation import leave_one_out

    table = read_dataset(SHARED / dataset)
    queries = select_split(table, "eval")
    device = select_device()
    row: dict = {"setting": setting, "mode": mode}
    t0 = time.perf_counter()
    if setting.startswith("untrained"):
        cfg = load_config(None, {"model.image_size": args.image_size, "model.embedding_dim": 0})
        model = create_model(cfg.model).to(device)
        mean, std = data_config(model)
        transform = eval_transform(args.image_size, mean, std)
        row.update(epochs=0, best_epoch=None, train_s=0.0)
    else:
        epochs = args.frozen_epochs if mode == "frozen" else args.finetune_epochs
        overrides = {
            "model.image_size": args.image_size,
            "train.mode": mode,
            "train.epochs": epochs,
            "train.cache_dir": str(args.work / "feature-cache"),
            **LOSSES[setting],
            **dict(parse_assignment(a) for a in args.set),
        }
        cfg = load_config(None, overrides)
        out = args.work / dataset / args.tag / f"{setting}-{mode}"
        result = train_embedding(cfg, select_split(table, "train"), out, resume=True)
        model, manifest = load_model(out)
        model.to(device)
        transform = manifest_transform(manifest)
        row.update(
            epochs=epochs,
            best_epoch=result.best_epoch,
            train_s=round(time.perf_counter() - t0, 1),
            validation=result.validation,
            epoch_losses=[round(v, 4) for v in result.epoch_losses],
        )
    embedded = embed_paths(model, queries["path"].tolist(), transform, flip_tta=setting == "untrained_flip")
    kept = queries[embedded.ok]
    sightings = [(lab, sighting_key(i)) for lab, i in zip(kept["label"], kept["image_id"], strict=True)]
    row.update(leave_one_out(embedded.vectors, kept["label"].tolist(), groups=sightings))  # protocol A
    row["peak_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="nyala", choices=["nyala", "lions"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--frozen-epochs", type=int, default=40)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--modes", default="frozen,finetune")
    parser.add_argument("--set", action="append", default=[], help="config override for every trained row, k=v")
    parser.add_argument("--tag", default="", help="suffix of the results files (for runs with --set)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-losses")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # "setting:mode": run one setting in this process
    args = parser.parse_args()
    if args.one:
        setting, mode = args.one.split(":")
        print(json.dumps(run_one(args.dataset, setting, mode, args)))
        return

    stem = f"train_losses_{args.dataset}_s{args.image_size}{'_' + args.tag if args.tag else ''}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    store = RESULTS / f"{stem}.json"
    rows: list[dict] = json.loads(store.read_text())["rows"] if store.is_file() else []
    plan = [] if args.tag else [("untrained", "-"), ("untrained_flip", "-")]
    plan += [(s, m) for m in args.modes.split(",") for s in LOSSES]
    for setting, mode in plan:
        if any(r["setting"] == setting and r["mode"] == mode for r in rows):
            continue
        print(f"== {args.dataset}: {setting} ({mode})", file=sys.stderr, flush=True)
        forwarded = [
            f"--dataset={args.dataset}",
            f"--image-size={args.image_size}",
            f"--frozen-epochs={args.frozen_epochs}",
            f"--finetune-epochs={args.finetune_epochs}",
            f"--work={args.work}",
            f"--tag={args.tag}",
            *(f"--set={a}" for a in args.set),
        ]
        done = subprocess.run(
            [sys.executable, __file__, *forwarded, f"--one={setting}:{mode}"], stdout=subprocess.PIPE, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"{setting} ({mode}) failed with exit code {done.returncode}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        store.write_text(json.dumps({"rows": rows, "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))
    write_markdown(args, rows, RESULTS / f"{stem}.md")


def write_markdown(args: argparse.Namespace, rows: list[dict], path: Path) -> None:
    def cell(value: object) -> str:
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [
        f"# {args.dataset}, protocol A ({args.image_size} px; evaluation split leave-one-out)",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(cell(r.get(c)) for c in COLUMNS) + " |" for r in rows),
        "",
        "recall@1/5: a right image among the nearest 1/5; map@r: pytorch-metric-learning's mAP@R; map@5: Kaggle",
        "MAP@5 of the k-NN-voted labels (closed set). train_s includes the frozen mode's feature caching when",
        "the cache was cold. peak_gib: peak RSS of the setting's own process.",
        "",
        f"Reproduce: `python benchmarks/train_losses.py --dataset {args.dataset} --image-size {args.image_size} "
        f"--frozen-epochs {args.frozen_epochs} --finetune-epochs {args.finetune_epochs} --modes {args.modes}"
        + "".join(f" --set {a}" for a in args.set)
        + (f" --tag {args.tag}" if args.tag else "")
        + "`",
    ]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
