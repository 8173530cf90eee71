"""Issue 5 benchmark: Kaggle-style baselines beside Kenning on protocol B (catalogue with new individuals).

Protocol B of ../shared/data/README.md on the evaluation split: each known identity is enrolled
from its first sighting, every other image queries; identities i % 10 in {0, 3, 6} are new and
must be answered new_whale. Every threshold is chosen on the `train` split only.

1. all new_whale: every query answered new_whale (the naive Kaggle baseline).
2. softmax: the common starter approach, a softmax classifier (logistic regression) on frozen
   ImageNet features of the enrolled images (plain + augmented views); new_whale first when its top
   probability is below a threshold chosen by MAP@5 on protocol B carved out of the train split.
3. untrained kNN: ImageNet features (no training) in Kenning's index, k-NN voting, threshold
   calibrated on held-out train identities.
4. Kenning: the trained embedding (frozen backbone, triplet loss with batch-hard mining, the best
   frozen setting of benchmarks/train_losses.py), same index, voting and calibration (MAP@5), and
   the same model with the threshold calibrated for GAP instead.

recall@1 (k-NN rows): the nearest gallery image has the right identity, before any threshold.

    python benchmarks/baselines.py --dataset nyala
    python benchmarks/baselines.py --dataset lions --image-size 128

Writes benchmarks/results/baselines_<dataset>.{json,md} and an HTML report per Kenning row under
--work. Models are kept under --work and reused by a re-run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import RESULTS, ROOT, SHARED
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from kenning.config import Config, load_config
from kenning.data.readers import read_dataset, select_split
from kenning.data.splits import catalogue_split
from kenning.data.transforms import train_transform
from kenning.decision.threshold import calibrate_threshold
from kenning.decision.voting import Prediction, RankedLabels, place_unknown
from kenning.embeddings.checkpoint import load_model
from kenning.embeddings.inference import embed_paths, manifest_transform
from kenning.embeddings.training_state import seed_everything
from kenning.eval.protocols import run_protocol
from kenning.eval.report import write_report
from kenning.metrics.answers import answer_metrics
from kenning.training.run import train_embedding

UNKNOWN = "new_whale"
KENNING = {"train.mode": "frozen", "train.epochs": 40, "loss.name": "triplet", "loss.miner": "batch_hard"}
COLUMNS = [
    "system",
    "map@5",
    "gap",
    "known_accuracy",
    "unknown_accuracy",
    "auroc_known_vs_unknown",
    "false_accept_rate",
    "recall@1",
    "threshold",
]


def model_dir(cfg: Config, train: pd.DataFrame, out: Path) -> Path:
    if not (out / "model.pt").is_file():
        train_embedding(cfg, train, out, resume=True)
    return out


def truth(queries: pd.DataFrame, enrolled: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    known = queries["label"].isin(set(enrolled["label"])).to_numpy()
    return np.where(known, queries["label"].to_numpy(dtype=object), UNKNOWN).astype(str), known


def all_new_whale(queries: pd.DataFrame, enrolled: pd.DataFrame) -> dict:
    actual, known = truth(queries, enrolled)
    answers = [Prediction([UNKNOWN], [None], 0.0) for _ in actual]
    # an infinite threshold: it never accepts anyone (None would mean it accepts everyone)
    return answer_metrics(actual, known, answers, queries["image_id"].tolist(), UNKNOWN, float("inf"))


class SoftmaxBaseline:
    """Logistic regression on frozen ImageNet features; classes are the enrolled identities."""

    def __init__(self, untrained: Path, cfg: Config, views: int):
        self.model, self.manifest = load_model(untrained)
        self.augment = train_transform(self.manifest.image_size, self.manifest.mean, self.manifest.std, cfg.train)
        self.views = views

    def features(self, paths: list[str], augmented: bool = False) -> np.ndarray:
        transform = self.augment if augmented else manifest_transform(self.manifest)
        return embed_paths(self.model, paths, transform, progress=False).vectors

    def ranked(self, enrolled: pd.DataFrame, queries: pd.DataFrame) -> list[RankedLabels]:
        paths = enrolled["path"].tolist()
        x = np.concatenate([self.features(paths)] + [self.features(paths, True) for _ in range(self.views)])
        y = np.tile(enrolled["label"].to_numpy(dtype=object).astype(str), self.views + 1)
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(x, y)
        probs = clf.predict_proba(self.features(queries["path"].tolist()))
        out = []
        for row in probs:
            order = np.argsort(-row)[:5]
            top = [float(row[i]) for i in order]
            out.append(RankedLabels([str(clf.classes_[i]) for i in order], top, top))
        return out

    def run(self, train: pd.DataFrame, images: pd.DataFrame) -> dict:
        seed_everything(0)  # the augmented views
        cal_enrolled, cal_queries = catalogue_split(train)
        actual, _ = truth(cal_queries, cal_enrolled)
        threshold = calibrate_threshold(self.ranked(cal_enrolled, cal_queries), actual, UNKNOWN).threshold
        enrolled, queries = catalogue_split(images)
        actual, known = truth(queries, enrolled)
        answers = [place_unknown(r, threshold, UNKNOWN) for r in self.ranked(enrolled, queries)]
        metrics = answer_metrics(actual, known, answers, queries["image_id"].tolist(), UNKNOWN, threshold)
        return {**metrics, "threshold": threshold}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="nyala", choices=["nyala", "lions"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--views", type=int, default=8, help="softmax baseline: augmented views per enrolled image")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-baselines")
    parser.add_argument("--cache-dir", default=str(ROOT / "runs" / "bench-losses" / "feature-cache"))
    args = parser.parse_args()
    table = read_dataset(SHARED / args.dataset)
    train, images = select_split(table, "train"), select_split(table, "eval")
    work = args.work / args.dataset
    common = {"model.image_size": args.image_size, "index.unknown_label": UNKNOWN, "train.cache_dir": args.cache_dir}
    untrained_cfg = load_config(None, {**common, "train.epochs": 0, "model.embedding_dim": 0})
    trained_cfg = load_config(None, {**common, **KENNING})
    enrolled, queries = catalogue_split(images)
    rows = []

    def record(system: str, started: float, metrics: dict) -> None:
        rows.append({"system": system, "seconds": round(time.perf_counter() - started, 1), **metrics})
        print(f"{system}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))

    t0 = time.perf_counter()
    record("all new_whale", t0, {**all_new_whale(queries, enrolled), "threshold": None})
    untrained = model_dir(untrained_cfg, train, work / "untrained")
    t0 = time.perf_counter()
    record(
        "softmax on frozen ImageNet features",
        t0,
        SoftmaxBaseline(untrained, untrained_cfg, args.views).run(train, images),
    )
    gap_cfg = load_config(None, {**common, **KENNING, "index.calibrate": "gap"})
    for system, cfg, name, report in (
        ("untrained ImageNet kNN (Kenning index)", untrained_cfg, "untrained", "untrained"),
        ("Kenning (triplet, frozen backbone)", trained_cfg, "kenning-triplet", "kenning"),
        ("Kenning, threshold calibrated for GAP", gap_cfg, "kenning-triplet", "kenning-gap"),
    ):
        t0 = time.perf_counter()
        result = run_protocol("catalogue", model_dir(cfg, train, work / name), images, cfg.index, progress=False)
        write_report(result, work / f"report-{report}", f"{system}, protocol B on {args.dataset}")
        record(system, t0, result.metrics)
    meta = {
        "dataset": args.dataset,
        "image_size": args.image_size,
        "queries": len(queries),
        "known_queries": int(queries["label"].isin(set(enrolled["label"])).sum()),
        "enrolled_images": len(enrolled),
        "enrolled_identities": int(enrolled["label"].nunique()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"baselines_{args.dataset}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    lines = [
        f"# Protocol B on {args.dataset} ({args.image_size} px): {meta['enrolled_identities']} identities enrolled "
        f"from {meta['enrolled_images']} images, {meta['queries']} queries ({meta['known_queries']} known)",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = [row["system"]] + [
            "-" if row.get(c) is None else f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c])
            for c in COLUMNS[1:]
        ]
        lines.append("| " + " | ".join(cells) + " |")
    size = f" --image-size {args.image_size}" if args.image_size != 224 else ""
    lines += ["", f"Reproduce: `python benchmarks/baselines.py --dataset {args.dataset}{size}`"]
    (RESULTS / f"baselines_{args.dataset}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
