"""Choose the local stage's settings on the `train` split, never on the evaluation split.

Every train image queries all the other train images by LNBNN alone (no embedding, no training),
its own sighting left out as in protocol A; Recall@1 / Recall@5 of the best-scoring image, for each
setting asked. Features are extracted once per setting (image_side:foreground) and reused for every K.

    python benchmarks/local_settings.py --dataset lions --settings 256:0,512:0.3 --ks 3,5,8

Writes benchmarks/results/local_settings_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import RESULTS, SHARED

from kenning.config import LocalConfig
from kenning.data.readers import read_dataset, select_split
from kenning.data.splits import sighting_key
from kenning.local.features import extract_paths
from kenning.local.featureset import FeatureSet
from kenning.local.foreground import Foreground
from kenning.local.lnbnn import LnbnnMatcher
from kenning.local.sift import EXTRACTOR


def recall(features: list, labels: np.ndarray, groups: np.ndarray, k: int) -> dict[str, float]:
    matcher = LnbnnMatcher(FeatureSet.of(np.arange(len(labels)), features, EXTRACTOR.layout), labels, k=k)
    top1, top5 = [], []
    for i, f in enumerate(features):
        own = np.flatnonzero(groups == groups[i])
        if not ((labels == labels[i]).sum() > (labels[own] == labels[i]).sum()):
            continue  # no image of its identity outside its own sighting
        scored = labels[matcher.score(f, exclude=own).image_ids]
        top1.append(len(scored) > 0 and scored[0] == labels[i])
        top5.append(labels[i] in set(scored[:5]))
    return {"queries": len(top1), "recall@1": float(np.mean(top1)), "recall@5": float(np.mean(top5))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="lions", choices=["nyala", "lions"])
    parser.add_argument("--settings", default="256:0,512:0.3", help="image_side:foreground pairs")
    parser.add_argument("--ks", default="3,5,8")
    parser.add_argument("--max-keypoints", type=int, default=1000)
    args = parser.parse_args()
    train = select_split(read_dataset(SHARED / args.dataset), "train")
    labels = train["label"].to_numpy(dtype=object).astype(str)
    groups = np.array([f"{lab}|{sighting_key(i)}" for lab, i in zip(labels, train["image_id"], strict=True)])
    foreground = Foreground()
    rows = []
    for setting in args.settings.split(","):
        side, fg = int(setting.split(":")[0]), float(setting.split(":")[1])
        cfg = LocalConfig(method="sift", image_side=side, foreground=fg, max_keypoints=args.max_keypoints)
        started = time.perf_counter()
        features = extract_paths(train["path"].tolist(), cfg, foreground).features
        seconds = time.perf_counter() - started
        for k in [int(v) for v in args.ks.split(",")]:
            row = {"image_side": side, "foreground": fg, "k": k, **recall(features, labels, groups, k)}
            row["keypoints_per_image"] = round(float(np.mean([len(f) for f in features])), 1)
            row["extract_s"] = round(seconds, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"local_settings_{args.dataset}.json").write_text(json.dumps(rows, indent=2))
    lines = [
        f"# Local-stage settings on {args.dataset} train ({len(train)} images, LNBNN alone, own sighting left out)",
        "",
        "| image_side | foreground | K | keypoints/image | Recall@1 | Recall@5 |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['image_side']} | {r['foreground']} | {r['k']} | {r['keypoints_per_image']} | "
            f"{r['recall@1']:.3f} | {r['recall@5']:.3f} |"
            for r in rows
        ),
        "",
        f"Reproduce: `python benchmarks/local_settings.py --dataset {args.dataset} --settings {args.settings} "
        f"--ks {args.ks}`",
    ]
    (RESULTS / f"local_settings_{args.dataset}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
