"""Exploratory: would spatial verification help protocol B? (Not part of Kenning's answers yet.)

On a protocol B index built by `local_matching.py --dataset nyala`, a sample of queries is answered
by the fused path; each of its five first candidates is then checked geometrically: ratio-test
matches (0.8) of RootSIFT descriptors against each of the candidate's gallery images, and the
inliers of a RANSAC homography (8 px). Reports the known queries' first answer re-ranked by inliers
against the fused one, and how well the best inlier count separates known from new queries (AUROC)
beside the fused probability. It reads the evaluation split, so it may inform what to build next,
never a setting.

    python benchmarks/spatial_check.py --index runs/bench-local/nyala/catalogue-index --sample 200

Writes benchmarks/results/spatial_check_<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from common import RESULTS, ROOT, SHARED
from sklearn.metrics import roc_auc_score

from kenning.data.readers import read_dataset, select_split
from kenning.data.splits import catalogue_split
from kenning.local.featureset import LocalFeatures
from kenning.recognizer import Recognizer


def inliers(query: LocalFeatures, gallery: LocalFeatures, matcher: cv2.BFMatcher) -> int:
    if len(query) < 5 or len(gallery) < 5:
        return 0
    pairs = matcher.knnMatch(query.descriptors.astype(np.float32), gallery.descriptors.astype(np.float32), k=2)
    good = [a for a, b in (p for p in pairs if len(p) == 2) if a.distance < 0.8 * b.distance]
    if len(good) < 8:
        return 0
    src = query.keypoints[[g.queryIdx for g in good], :2]
    dst = gallery.keypoints[[g.trainIdx for g in good], :2]
    _, mask = cv2.findHomography(src, dst, cv2.RANSAC, 8.0)
    return 0 if mask is None else int(mask.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="nyala", choices=["nyala", "lions"])
    parser.add_argument("--index", type=Path, default=ROOT / "runs" / "bench-local" / "nyala" / "catalogue-index")
    parser.add_argument("--sample", type=int, default=200)
    args = parser.parse_args()
    recognizer = Recognizer.open(args.index, progress=False)
    enrolled, queries = catalogue_split(select_split(read_dataset(SHARED / args.dataset), "eval"))
    queries = queries.sample(min(args.sample, len(queries)), random_state=0)
    probes = recognizer.read(queries["path"].tolist())
    queries = queries[probes.ok]
    ranked = recognizer.rank(recognizer.match(probes.vectors, probes.local))
    table, live = recognizer.index.table, recognizer.index.live_local()
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    known = queries["label"].isin(set(enrolled["label"])).to_numpy()
    fused_right, checked_right, best = [], [], []
    for truth, is_known, answer, features in zip(queries["label"], known, ranked, probes.local, strict=True):
        candidates = answer.labels[:5]
        counts = []
        for label in candidates:
            rows = live.rows_of(table.loc[table["label"] == label, "id"].to_numpy())
            counts.append(max(inliers(features, live.image(int(r)), matcher) for r in rows))
        best.append(max(counts, default=0))
        if is_known and candidates:
            fused_right.append(candidates[0] == truth)
            checked_right.append(candidates[int(np.argmax(counts))] == truth)  # ties keep the fused order
    result = {
        "index": str(args.index.resolve().relative_to(ROOT))
        if args.index.resolve().is_relative_to(ROOT)
        else str(args.index),
        "queries": len(queries),
        "known_queries": int(known.sum()),
        "known_first_answer_right_fused": float(np.mean(fused_right)),
        "known_first_answer_right_reranked_by_inliers": float(np.mean(checked_right)),
        "auroc_known_vs_new_best_inliers": float(roc_auc_score(known, best)),
        "auroc_known_vs_new_fused_probability": float(roc_auc_score(known, [r.best_similarity for r in ranked])),
    }
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"spatial_check_{args.dataset}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
