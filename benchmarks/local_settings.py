"""Choose the local stage's settings on the `train` split, never on the evaluation split.

Every train image queries all the other train images by LNBNN alone (no embedding, no training),
its own sighting left out as in protocol A; Recall@1 / Recall@5 of the best-scoring image, for each
setting asked. Features are extracted once per setting (image_side:foreground) and reused for every K.
`--method` picks the family (sift, aliked, disk, xfeat); `--glue B` also re-ranks LNBNN's best B
images by the family's learned matcher alone (summed match confidence): the "glue" columns.
`--spatial N` / `--identity-score nsum` / `--tolerance PX` score as `local.spatial`,
`local.identity_score` and `local.spatial_tolerance` do, `--whiten` as `local.whiten`, and rank
identities rather than images.

    python benchmarks/local_settings.py --dataset lions --settings 256:0,512:0.3 --ks 3,5,8
    python benchmarks/local_settings.py --dataset lions --method aliked --settings 256:0 --ks 3 --glue 10
    python benchmarks/local_settings.py --dataset lions --settings 256:0 --ks 3 --spatial 30 --identity-score nsum

Writes benchmarks/results/local_settings_<dataset>[_<method>][_sp<N>_<score>_tol<PX>][_whiten][_<tag>].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import RESULTS, SHARED
from tqdm import tqdm

from kenning.config import LocalConfig
from kenning.data.readers import read_dataset, select_split
from kenning.data.splits import sighting_key
from kenning.local.extractor import create_extractor
from kenning.local.features import extract_paths
from kenning.local.featureset import FeatureSet
from kenning.local.foreground import Foreground
from kenning.local.glue import create_glue
from kenning.local.lnbnn import LnbnnMatcher


def recall(
    features: list, labels: np.ndarray, groups: np.ndarray, k: int, method: str, glue: int = 0, **scoring
) -> dict[str, float]:
    """Recall of LNBNN alone; `scoring` (spatial, identity_score, tolerance) as LnbnnMatcher takes it."""
    layout = create_extractor(method).layout
    matcher = LnbnnMatcher(FeatureSet.of(np.arange(len(labels)), features, layout), labels, k=k, **scoring)
    pair = create_glue(method) if glue else None
    top1, top5, glue1, glue5, seconds = [], [], [], [], []
    for i, f in tqdm(list(enumerate(features)), desc=f"queries K={k}", unit="query"):
        own = np.flatnonzero(groups == groups[i])
        if not ((labels == labels[i]).sum() > (labels[own] == labels[i]).sum()):
            continue  # no image of its identity outside its own sighting
        found = matcher.score(f, exclude=own)
        ids = found.image_ids
        scored = labels[ids]
        named = found.labels if scoring else scored  # identities ranked (nsum has no image ranking)
        top1.append(len(named) > 0 and named[0] == labels[i])
        top5.append(labels[i] in set(named[:5]))
        if pair is not None:
            started = time.perf_counter()
            confidence = np.array([pair.score(f, features[j]) for j in ids[:glue]])
            seconds.append(time.perf_counter() - started)
            reranked = [*scored[:glue][np.argsort(-confidence, kind="stable")], *scored[glue:]]
            glue1.append(len(reranked) > 0 and reranked[0] == labels[i])
            glue5.append(labels[i] in set(reranked[:5]))
    out = {"queries": len(top1), "recall@1": float(np.mean(top1)), "recall@5": float(np.mean(top5))}
    if pair is not None:
        out |= {"glue_recall@1": float(np.mean(glue1)), "glue_recall@5": float(np.mean(glue5))}
        out["glue_s_per_query"] = round(float(np.mean(seconds)), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="lions", choices=["nyala", "lions"])
    parser.add_argument("--settings", default="256:0,512:0.3", help="image_side:foreground pairs")
    parser.add_argument("--ks", default="3,5,8")
    parser.add_argument("--max-keypoints", type=int, default=1000)
    parser.add_argument("--method", default="sift")
    parser.add_argument("--contrast", type=float, default=LocalConfig.contrast, help="local.contrast (sift)")
    parser.add_argument("--glue", type=int, default=0, help="LNBNN's best images re-ranked by the learned matcher")
    parser.add_argument("--spatial", type=int, default=0, help="local.spatial: best images re-scored by RANSAC")
    parser.add_argument("--identity-score", default="best_image", choices=["best_image", "nsum"])
    parser.add_argument("--tolerance", type=float, default=12.0, help="local.spatial_tolerance")
    parser.add_argument("--whiten", action="store_true", help="local.whiten: LNBNN over PCA-whitened descriptors")
    parser.add_argument("--tag", default="", help="appended to the results' name (another --settings run)")
    args = parser.parse_args()
    scoring = (
        {"spatial": args.spatial, "identity_score": args.identity_score, "tolerance": args.tolerance}
        if args.spatial or args.identity_score != "best_image" or args.whiten
        else {}
    )
    if args.whiten:
        scoring["whiten"] = True
    train = select_split(read_dataset(SHARED / args.dataset), "train")
    labels = train["label"].to_numpy(dtype=object).astype(str)
    groups = np.array([f"{lab}|{sighting_key(i)}" for lab, i in zip(labels, train["image_id"], strict=True)])
    foreground = Foreground()
    rows = []
    for setting in args.settings.split(","):
        side, fg = int(setting.split(":")[0]), float(setting.split(":")[1])
        cfg = LocalConfig(
            method=args.method, image_side=side, foreground=fg, max_keypoints=args.max_keypoints, contrast=args.contrast
        )
        started = time.perf_counter()
        features = extract_paths(train["path"].tolist(), cfg, foreground).features
        seconds = time.perf_counter() - started
        for k in [int(v) for v in args.ks.split(",")]:
            row = {"method": args.method, "image_side": side, "foreground": fg, "contrast": args.contrast, "k": k}
            row |= scoring | recall(features, labels, groups, k, args.method, args.glue, **scoring)
            row["keypoints_per_image"] = round(float(np.mean([len(f) for f in features])), 1)
            row["descriptor_bytes_per_image"] = round(float(np.mean([f.descriptors.nbytes for f in features])))
            row["extract_images_per_s"] = round(len(features) / seconds, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"local_settings_{args.dataset}{'' if args.method == 'sift' else '_' + args.method}"
    if scoring:
        stem += f"_sp{args.spatial}_{args.identity_score}_tol{args.tolerance:g}" + ("_whiten" if args.whiten else "")
    stem += f"_{args.tag}" if args.tag else ""
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=2))
    glued = f" {args.glue} best re-ranked by the learned matcher," if args.glue else ""
    glued += "".join(f" {k} {v}," for k, v in scoring.items())
    glued += f" SIFT contrast {args.contrast:g}," if args.contrast != LocalConfig.contrast else ""
    lines = [
        f"# Local-stage settings on {args.dataset} train ({len(train)} images, {args.method}, LNBNN alone,{glued} "
        "own sighting left out)",
        "",
        "| image_side | foreground | K | keypoints/image | descriptor bytes/image | images/s | Recall@1 | Recall@5 "
        "| glue Recall@1 | glue Recall@5 | glue s/query |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['image_side']} | {r['foreground']} | {r['k']} | {r['keypoints_per_image']} | "
            f"{r['descriptor_bytes_per_image']} | {r['extract_images_per_s']} | {r['recall@1']:.3f} | "
            f"{r['recall@5']:.3f} | {_cell(r, 'glue_recall@1')} | {_cell(r, 'glue_recall@5')} | "
            f"{r.get('glue_s_per_query', '-')} |"
            for r in rows
        ),
        "",
        f"Reproduce: `python benchmarks/local_settings.py --dataset {args.dataset} --method {args.method} "
        f"--settings {args.settings} --ks {args.ks} --max-keypoints {args.max_keypoints} --glue {args.glue}"
        + (f" --contrast {args.contrast:g}" if args.contrast != LocalConfig.contrast else "")
        + (
            f" --spatial {args.spatial} --identity-score {args.identity_score} --tolerance {args.tolerance:g}"
            if scoring
            else ""
        )
        + (" --whiten" if args.whiten else "")
        + (f" --tag {args.tag}" if args.tag else "")
        + "`",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


def _cell(row: dict, key: str) -> str:
    return f"{row[key]:.3f}" if key in row else "-"


if __name__ == "__main__":
    main()
