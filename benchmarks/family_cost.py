"""Issue 24 benchmark: what each local-feature family costs per image and per pair, on real nyala
photos and two CPU cores, all in one run so the ratios compare.

For each family (sift, aliked, disk, xfeat) at the keypoints the nyala tables used (SIFT 1000,
learned 512): extraction images/s (foreground map included, shared by all), keypoints and bytes of
stored features per image (the index's npz layout), and for the learned ones their matcher's
(LightGlue, LighterGlue) seconds per pair, what `local.glue N` pays for 2N gallery images a query.

    python benchmarks/family_cost.py [--images 32 --pairs 24]

Writes benchmarks/results/family_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, SHARED

from kenning.config import LocalConfig
from kenning.data.readers import read_dataset, select_split
from kenning.local.extractor import create_extractor
from kenning.local.features import extract_paths
from kenning.local.featureset import FeatureSet
from kenning.local.foreground import Foreground
from kenning.local.glue import create_glue

FAMILIES = {"sift": 1000, "aliked": 512, "disk": 512, "xfeat": 512}
GLUED = {"aliked", "disk", "xfeat"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=24)
    args = parser.parse_args()
    paths = select_split(read_dataset(SHARED / "nyala"), "eval")["path"].tolist()[: args.images]
    foreground = Foreground()
    rows = []
    for family, keypoints in FAMILIES.items():
        cfg = LocalConfig(method=family, max_keypoints=keypoints)
        extract_paths(paths[:2], cfg, foreground, progress=False)  # warm: the network built, weights read
        started = time.perf_counter()
        features = extract_paths(paths, cfg, foreground, progress=False).features
        seconds = time.perf_counter() - started
        layout = create_extractor(family).layout
        with tempfile.TemporaryDirectory() as tmp:
            stored = FeatureSet.of(np.arange(len(features)), features, layout)
            stored.save(Path(tmp) / "f.npz")
            size = (Path(tmp) / "f.npz").stat().st_size
        row = {
            "family": family,
            "max_keypoints": keypoints,
            "images_per_s": len(paths) / seconds,
            "keypoints_per_image": float(np.mean([len(f) for f in features])),
            "bytes_per_image": size / len(features),
        }
        if family in GLUED:
            glue = create_glue(family)
            glue.match(features[0], features[1])  # warm
            pairs = [(i % len(features), (i * 7 + 3) % len(features)) for i in range(args.pairs)]
            times = []
            for q, g in pairs:
                started = time.perf_counter()
                glue.match(features[q], features[g])
                times.append(time.perf_counter() - started)
            row["glue_s_per_pair"] = statistics.median(times)
        rows.append(row)
        print(json.dumps(row), flush=True)
    (RESULTS / "family_cost.json").write_text(json.dumps({"images": len(paths), "rows": rows}, indent=2) + "\n")
    sift = rows[0]
    lines = [
        f"# Local-feature families: cost on {len(paths)} nyala photos (eval split), 2 CPU cores, one run",
        "",
        "| family | max keypoints | images/s | x SIFT | keypoints / image | KB / image | matcher s / pair |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        glue = f"{r['glue_s_per_pair']:.3f}" if "glue_s_per_pair" in r else "-"
        lines.append(
            f"| {r['family']} | {r['max_keypoints']} | {r['images_per_s']:.2f} | "
            f"{r['images_per_s'] / sift['images_per_s']:.2f} | {r['keypoints_per_image']:.0f} | "
            f"{r['bytes_per_image'] / 1024:.0f} | {glue} |"
        )
    lines += [
        "",
        "Extraction includes the foreground map (the same for every family). `local.glue N` runs the matcher on "
        "2N gallery images per query. Reproduce: "
        f"`python benchmarks/family_cost.py --images {args.images} --pairs {args.pairs}`",
    ]
    (RESULTS / "family_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
