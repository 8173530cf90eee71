"""Issue 24 benchmark: the local stage with the learned matcher at gallery scale, read from disk.

A source index of real nyala photos with local features of one family (default DISK, LightGlue
re-matching the 3 best candidates: the fused path of results/local_matching_nyala_disk_glue3.md) is
replicated on disk to each gallery size (vectors and descriptors jittered, so no two images are
equal); each size is then opened by a fresh process that answers real query photos (nyala test
photos outside the source gallery) as `kenning serve` would, warm:
- latency of one query: match + rank (the image already read; median and slowest), per stage,
  and reading the query image (embedding + local features) apart;
- peak resident memory of that process (VmHWM, the model and the index included; the pages of
  the memory-mapped local features that queries read count);
- bytes of local features on disk, and what opening the index and the first query cost.

The model is the untrained ImageNet EfficientNet-Lite0 (no training needed; what is measured is
cost, not accuracy) without held-out identities, so the source index calibrates its fusion on
itself (leave-one-out).

    python benchmarks/local_scale.py --work /tmp/bench/runs --sizes 10000,100000

Writes benchmarks/results/local_scale_<family>.{json,md}; the replicated indexes stay under WORK
(`--keep` to keep them; a 100k DISK gallery is ~6 GB).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, SHARED
from tqdm import tqdm

from kenning.build import build_index
from kenning.config import IndexConfig, LocalConfig, load_config
from kenning.data.readers import read_dataset, select_split
from kenning.index.backend import create_index
from kenning.index.files import table_rows
from kenning.index.gallery import GalleryIndex
from kenning.local.featureset import FeatureSet
from kenning.recognizer import Recognizer
from kenning.training.run import train_embedding

CHUNK = 2000  # replicated images written per step


def model_dir(work: Path) -> Path:
    """The untrained EfficientNet-Lite0 embedding (pooled features, no held-out identities)."""
    out = work / "nyala" / "model-untrained-nohold"
    if not (out / "model.pt").is_file():
        overrides = {
            "train.epochs": 0,
            "model.embedding_dim": 0,
            "model.image_size": 224,
            "train.holdout_fraction": 0.0,
        }
        cfg = load_config(None, overrides)
        train_embedding(cfg, select_split(read_dataset(SHARED / "nyala"), "train"), out)
    return out


def source_index(work: Path, model: Path, local: LocalConfig, images: int) -> Path:
    white = "-white" if local.whiten else ""
    out = work / "nyala" / f"scale-source-{local.method}-{local.max_keypoints}-{images}{white}"
    if not (out / "manifest.json").is_file():
        gallery = select_split(read_dataset(SHARED / "nyala"), "eval").iloc[:images]
        build_index(model, gallery, IndexConfig(unknown_label="new_whale"), out, local=local, replace=True)
    return out


def replicate(source: Path, size: int, out: Path, seed: int = 0) -> None:
    """`size` gallery images made of the source's, written straight to disk: descriptors go through
    memory-mapped temporaries chunk by chunk, so this process never holds them whole either."""
    rng = np.random.default_rng(seed)
    src = GalleryIndex.load(source)
    base, table = src.base_local, src.base_table
    rows = np.arange(size) % len(table)
    counts = np.diff(base.offsets)[rows]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / "scratch"
    scratch.mkdir(exist_ok=True)
    open_memmap = np.lib.format.open_memmap
    n, dim, dtype = int(offsets[-1]), base.descriptors.shape[1], base.descriptors.dtype
    descriptors = open_memmap(scratch / "d.npy", "w+", dtype, (n, dim))
    keypoints = open_memmap(scratch / "k.npy", "w+", np.float32, (n, 4))
    weights = open_memmap(scratch / "w.npy", "w+", np.float16, (n,))
    for start in tqdm(range(0, size, CHUNK), desc=f"replicating {size}", unit="chunk"):
        part = rows[start : start + CHUNK]
        picked = np.concatenate([np.arange(base.offsets[r], base.offsets[r + 1]) for r in part])
        a, b = offsets[start], offsets[min(start + CHUNK, size)]
        d = np.asarray(base.descriptors[picked], np.float32)
        quantised = dtype == np.uint8  # SIFT: small integer steps; learned float16: small gaussian noise
        d = np.clip(d + rng.integers(-3, 4, d.shape), 0, 255) if quantised else d + rng.normal(0, 0.01, d.shape)
        descriptors[a:b] = d.astype(dtype)
        keypoints[a:b] = base.keypoints[picked]
        weights[a:b] = base.weights[picked]
    vectors = src.vectors_of(table["id"].to_numpy())[rows]
    vectors = vectors + rng.normal(0, 0.02, vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(size, dtype=np.int64)
    features = FeatureSet(ids, offsets, keypoints, descriptors, weights, base.foreground[rows], base.sizes[rows])
    labels = [f"{table['label'].iloc[r]}-{i // len(table)}" for i, r in enumerate(rows)]
    names = [f"img{i}.jpg" for i in range(size)]
    manifest = dataclasses.replace(src.manifest, next_id=size, count=size, index_type="Flat", search_params="")
    vector_index = create_index("faiss", vectors.shape[1], size, "Flat", "")
    vector_index.add(vectors, ids)
    rows_table = table_rows(ids, names, labels, table["path"].to_numpy()[rows].tolist())
    index = GalleryIndex(manifest, vector_index, rows_table, base_local=features)
    index.save(out / "index", replace=True)
    shutil.rmtree(scratch)


def peak_rss_gib() -> float:
    """This process's peak resident memory since it started (VmHWM). Not ru_maxrss: Linux carries the
    parent's resident size at fork into a child's ru_maxrss, and the parent here wrote the galleries."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return round(int(line.split()[1]) / 2**20, 2)


def measure(index: Path, queries: list[str], glue: int) -> dict:
    """One fresh process's view: open, first query, warm queries; peak memory. The index's files are
    first dropped from the page cache (replicate() just wrote them): a server opens a gallery built
    earlier, and pages cached at write time would be mapped whole (large folios) and counted."""
    for path in index.iterdir():
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    started = time.perf_counter()
    recognizer = Recognizer.open(index, progress=False)
    recognizer.configure(local=True)
    opened = time.perf_counter() - started
    started = time.perf_counter()
    read = recognizer.read(queries)
    read_s = (time.perf_counter() - started) / len(queries)
    probes = [(read.vectors[i : i + 1], [read.local[i]]) for i in range(len(queries))]
    started = time.perf_counter()
    recognizer.rank(recognizer.match(*probes[0]))
    first = time.perf_counter() - started
    times, stages = [], []
    for vectors, local in probes[1:]:
        recognizer.times.reset()
        started = time.perf_counter()
        recognizer.rank(recognizer.match(vectors, local))
        times.append(time.perf_counter() - started)
        stages.append(dict(recognizer.times.seconds))
    return {
        "gallery_images": len(recognizer.index),
        "descriptors": int(recognizer.index.base_local.descriptor_count),
        "local_bytes": (index / recognizer.index.manifest.local_base_file).stat().st_size,
        "glue": glue,
        "open_s": round(opened, 2),
        "read_query_s": round(read_s, 3),
        "first_query_s": round(first, 2),
        "warm_median_s": round(statistics.median(times), 3),
        "warm_max_s": round(max(times), 3),
        "stages_median_s": {k: round(statistics.median(s[k] for s in stages if k in s), 4) for k in stages[0]},
        "peak_rss_gib": peak_rss_gib(),
        "queries": len(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-scale")
    parser.add_argument("--family", default="disk")
    parser.add_argument("--glue", type=int, default=3, help="candidates re-matched by the learned matcher (sift: 0)")
    parser.add_argument("--max-keypoints", type=int, default=512)
    parser.add_argument("--source-images", type=int, default=120)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=12)
    parser.add_argument("--whiten", action="store_true", help="local.whiten: the fit is part of the first query")
    parser.add_argument("--keep", action="store_true", help="keep the replicated indexes")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process: one index
    args = parser.parse_args()
    test = select_split(read_dataset(SHARED / "nyala"), "eval")
    queries = test["path"].tolist()[-args.queries :]
    if args.measure:
        print(json.dumps(measure(args.measure, queries, args.glue)))
        return
    local = LocalConfig(method=args.family, max_keypoints=args.max_keypoints, glue=args.glue, whiten=args.whiten)
    source = source_index(args.work, model_dir(args.work), local, args.source_images)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        out = args.work / "nyala" / f"scale-{args.family}-{size}{'-white' if args.whiten else ''}"
        if not (out / "index" / "manifest.json").is_file():
            replicate(source, size, out)
        child = [sys.executable, __file__, "--measure", str(out / "index"), "--queries", str(args.queries)]
        done = subprocess.run([*child, "--glue", str(args.glue)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
        if not args.keep:
            shutil.rmtree(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"local_scale_{args.family}{'_white' if args.whiten else ''}"
    (RESULTS / f"{name}.json").write_text(json.dumps({"local": dataclasses.asdict(local), "rows": rows}, indent=2))
    lines = [
        f"# The local stage at scale: {args.family} + its learned matcher, features read from disk (2 CPU cores)",
        "",
        f"local: `{json.dumps(dataclasses.asdict(local))}`; source: {args.source_images} nyala test photos, "
        f"replicated with jitter; {args.queries} query photos, the first one not counted as warm.",
        "",
        "| gallery images | descriptors | local features GB | open s | first query s | warm median s | "
        "warm max s | stages (median s) | read query s | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        stages = ", ".join(f"{k} {v}" for k, v in r["stages_median_s"].items())
        lines.append(
            f"| {r['gallery_images']} | {r['descriptors']} | {r['local_bytes'] / 1e9:.2f} | {r['open_s']} | "
            f"{r['first_query_s']} | {r['warm_median_s']} | {r['warm_max_s']} | {stages} | {r['read_query_s']} | "
            f"{r['peak_rss_gib']} |"
        )
    lines += [
        "",
        "Warm: match + rank of one query whose image was read already (reading it, embedding and "
        "local features, is the `read query` column). Peak RSS is the measuring process's own (a fresh "
        "one per size).",
        "",
        f"Reproduce: `python benchmarks/local_scale.py --work WORK --family {args.family} --glue {args.glue} "
        f"--max-keypoints {args.max_keypoints} --sizes {args.sizes}{' --whiten' if args.whiten else ''}`",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
