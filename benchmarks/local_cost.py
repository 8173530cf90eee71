"""Issue 12 benchmark: what the local stage costs on two CPU cores.

- extraction: images per second (foreground map + SIFT + RootSIFT) on real nyala photos;
- storage: bytes of local features per gallery image (the index's local-base file);
- build: seconds per gallery image with and without local features (build-index on nyala test);
- warm single-query latency with and without the local stage at 1k, 3k and 10k gallery images
  (nyala features replicated with noise), for one index of all descriptors and for the global
  shortlist, so the crossover the automatic choice (local.max_descriptors) makes is visible;
- peak memory of each size.

    python benchmarks/local_cost.py --index runs/bench-local/nyala/reid-index

Writes benchmarks/results/local_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, SHARED

from kenning.build import build_index
from kenning.config import IndexConfig, LocalConfig
from kenning.data.readers import read_dataset, select_split
from kenning.index.backend import create_index
from kenning.index.gallery import GalleryIndex
from kenning.local.features import extract_paths
from kenning.local.featureset import FeatureSet
from kenning.local.foreground import Foreground
from kenning.recognizer import Recognizer


def peak_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def replicate(index: GalleryIndex, size: int, seed: int = 0) -> GalleryIndex:
    """`size` images made of the index's own, vectors and descriptors jittered so no two are equal."""
    rng = np.random.default_rng(seed)
    live = index.live_local()
    table = index.table
    reps = int(np.ceil(size / len(table)))
    vectors = np.concatenate([index.vectors_of(table["id"].to_numpy())] * reps)[:size]
    vectors = vectors + rng.normal(0, 0.02, vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = np.arange(size) % len(table)
    features = []
    for r in rows:
        f = live.image(int(live.rows_of(np.array([table["id"].iloc[r]]))[0]))
        noise = rng.integers(-3, 4, f.descriptors.shape)
        f.descriptors = np.clip(f.descriptors.astype(int) + noise, 0, 255).astype(np.uint8)
        features.append(f)
    manifest = dataclasses.replace(index.manifest, next_id=0, count=0, index_type="Flat", search_params="")
    base = create_index("faiss", vectors.shape[1], size, "Flat", "")
    out = GalleryIndex(manifest, base, table.iloc[:0], base_local=FeatureSet.empty(manifest.descriptor_layout))
    labels = [f"{table['label'].iloc[r]}-{i // len(table)}" for i, r in enumerate(rows)]
    out.add(vectors, [f"img{i}" for i in range(size)], labels, [""] * size, local=features)
    return out


def latency(recognizer: Recognizer, probes: list, local: bool, repeats: int) -> float:
    """Median seconds of one query's match + rank, warm (the matcher built, the query read)."""
    recognizer.configure(local=local)
    times = []
    for i in range(repeats):
        vectors, features = probes[i % len(probes)]
        started = time.perf_counter()
        recognizer.rank(recognizer.match(vectors, features if local else None))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=ROOT / "runs" / "bench-local" / "nyala" / "reid-index")
    parser.add_argument("--sizes", default="1000,3000,10000")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--extract", type=int, default=64, help="images timed for extraction")
    parser.add_argument("--build", type=int, default=200, help="gallery images timed for build-index")
    args = parser.parse_args()
    results: dict = {"index": str(args.index)}
    base = Recognizer.open(args.index, progress=False)
    cfg = LocalConfig(**base.index.manifest.local)
    images = select_split(read_dataset(SHARED / "nyala"), "eval")

    foreground = Foreground()
    paths = images["path"].tolist()[: args.extract]
    extract_paths(paths[:4], cfg, foreground, progress=False)  # warm
    started = time.perf_counter()
    extract_paths(paths, cfg, foreground, progress=False)
    results["extraction_images_per_s"] = round(len(paths) / (time.perf_counter() - started), 2)
    local_file = args.index / base.index.manifest.local_base_file
    results["local_bytes_per_image"] = int(local_file.stat().st_size / len(base.index.base_table))
    results["keypoints_per_image"] = round(base.index.live_local().descriptor_count / len(base.index), 1)

    gallery = images.iloc[: args.build]
    model = base.index.manifest.model_dir
    for name, local in (("without", None), ("with", cfg)):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            build_index(model, gallery, IndexConfig(threshold=0.5), Path(tmp) / "i", progress=False, local=local)
            results[f"build_s_per_image_{name}_local"] = round((time.perf_counter() - started) / len(gallery), 3)
    print(json.dumps(results, indent=1), flush=True)

    queries = images.iloc[-args.repeats :]["path"].tolist()
    read = base.reader.read(queries, True)
    probes = [(read.vectors[i : i + 1], [read.local[i]]) for i in range(len(read.vectors))]
    started = time.perf_counter()
    base.reader.read(queries[:5], True)
    results["read_one_query_s"] = round((time.perf_counter() - started) / 5, 3)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        index = replicate(base.index, size)
        descriptors = index.live_local().descriptor_count
        for mode, limit in (("one index", 10**9), ("shortlist", 1)):
            if mode == "one index" and descriptors > 6_000_000:
                continue  # about 3 GiB of float32 descriptors and minutes of IVF training: not a query index
            index.manifest.local = {**cfg.__dict__, "max_descriptors": limit}
            recognizer = base.with_index(index)
            started = time.perf_counter()
            recognizer.matcher  # noqa: B018 -- built on first use: timed here, not in the queries
            prepare = time.perf_counter() - started
            row = {
                "gallery_images": size,
                "descriptors": descriptors,
                "mode": mode,
                "prepare_s": round(prepare, 1),
                "latency_without_local_s": round(latency(recognizer, probes, False, args.repeats), 4),
                "latency_with_local_s": round(latency(recognizer, probes, True, args.repeats), 4),
                "peak_rss_gib": peak_gib(),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    results["latency"] = rows
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "local_cost.json").write_text(json.dumps(results, indent=2))
    lines = [
        "# Local stage cost (2 CPU cores)",
        "",
        f"- extraction: {results['extraction_images_per_s']} images/s (foreground map + SIFT + RootSIFT), "
        f"{results['keypoints_per_image']} keypoints per image",
        f"- storage: {results['local_bytes_per_image']} bytes of local features per gallery image",
        f"- build-index: {results['build_s_per_image_without_local']} s per image without local features, "
        f"{results['build_s_per_image_with_local']} s with (calibration included, {args.build} images)",
        f"- reading one query image for both stages: {results['read_one_query_s']} s",
        "",
        "Warm single-query latency (median of match + rank; reading the image not included):",
        "",
        "| gallery images | descriptors | local search | prepare s | without local s | with local s | peak RSS GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['gallery_images']} | {r['descriptors']} | {r['mode']} | {r['prepare_s']} | "
            f"{r['latency_without_local_s']} | {r['latency_with_local_s']} | {r['peak_rss_gib']} |"
        )
    shown = args.index.resolve().relative_to(ROOT) if args.index.resolve().is_relative_to(ROOT) else args.index
    lines += ["", f"Reproduce: `python benchmarks/local_cost.py --index {shown}`"]
    (RESULTS / "local_cost.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
