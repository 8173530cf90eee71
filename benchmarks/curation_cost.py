"""Issue 25 benchmark: what a curation commit costs on a large catalogue, beside an enrolment.

A rename, merge or split rewrites the label tables (the base's only when one of its images changes)
and never the vectors; an enrolment writes only the side index. Measured on one index of `--size`
synthetic images (random unit vectors, exact FAISS index: the vectors do not matter here, the
table does), each operation timed in this process, repeated `--repeats` times (median reported):
- enrol one photo (the baseline: what every catalogue does all day);
- rename an identity that has only enrolled images (side index only);
- rename / merge / split identities of the base (its label table rewritten);
- `history` (read the log), and loading the index before and after (what a reader pays).

    python benchmarks/curation_cost.py --size 1000000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS

from kenning.config import IndexConfig
from kenning.embeddings.checkpoint import ModelManifest
from kenning.index import curation, store
from kenning.index.gallery import GalleryIndex
from kenning.index.history import read_history

DIM = 64
PER_IDENTITY = 4


def _build(directory: Path, size: int) -> None:
    model = ModelManifest(
        backbone="synthetic", image_size=8, mean=[0.5] * 3, std=[0.5] * 3, embedding_dim=DIM, head_dim=DIM,
        gem_p=3.0, fingerprint="synthetic",
    )  # fmt: skip
    cfg = IndexConfig(index_type="Flat", search_params="", k=5)
    index = GalleryIndex.new(model, directory, cfg, size=size)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((size, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    names = [f"img{i:08d}.jpg" for i in range(size)]
    labels = [f"N-{i // PER_IDENTITY:07d}" for i in range(size)]
    index.add(vectors, names, labels, [f"/photos/{n}" for n in names])
    index.save(directory)


def _timed(call, *args) -> float:
    started = time.perf_counter()
    call(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="kenning-curation-") as tmp:
        directory = Path(tmp) / "index"
        build_s = _timed(_build, directory, args.size)
        load_before = statistics.median(_timed(GalleryIndex.load, directory) for _ in range(3))
        times: dict[str, list[float]] = {k: [] for k in ("enrol", "rename_enrolled", "rename", "merge", "split")}
        for r in range(args.repeats):
            vector = rng.standard_normal((1, DIM)).astype(np.float32)
            vector /= np.linalg.norm(vector)
            times["enrol"].append(_timed(store.enroll, directory, vector, [f"new{r}.jpg"], [f"new{r}"], [""]))
            times["rename_enrolled"].append(_timed(curation.rename, directory, f"new{r}", f"renamed{r}"))
            a, b, c = (f"N-{1000 * r + j:07d}" for j in range(3))
            times["rename"].append(_timed(curation.rename, directory, a, f"{a}-renamed"))
            times["merge"].append(_timed(curation.merge, directory, [b, c], b))
            moved = [f"img{PER_IDENTITY * (1000 * r + 2):08d}.jpg"]  # c's first image, now b's
            times["split"].append(_timed(curation.split, directory, b, moved, f"{b}-b"))
        started = time.perf_counter()
        logged = len(read_history(directory))
        history_s = time.perf_counter() - started
        load_after = statistics.median(_timed(GalleryIndex.load, directory) for _ in range(3))
        table_mb = sum(p.stat().st_size for p in directory.glob("base-*.parquet")) / 2**20
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "size": args.size, "repeats": args.repeats, "build_s": build_s, "median_s": median,
        "history_s": history_s, "load_before_s": load_before, "load_after_s": load_after, "base_table_mb": table_mb,
    }  # fmt: skip
    out = RESULTS / f"curation_cost_{args.size}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        ("enrol one photo (baseline)", "enrol"),
        ("rename an identity of enrolled images only", "rename_enrolled"),
        ("rename an identity of the base", "rename"),
        ("merge two identities of the base", "merge"),
        ("split one image off an identity of the base", "split"),
    ]
    lines = [
        f"# Curation cost on a catalogue of {args.size:,} images",
        "",
        f"Synthetic index ({DIM}-d unit vectors, exact FAISS, {PER_IDENTITY} images per identity, label table "
        f"{table_mb:.1f} MB); 2 CPU cores; median of {args.repeats} commits each, all in one run.",
        "",
        "| operation | median seconds | x enrolment |",
        "|---|---|---|",
        *(f"| {name} | {median[k]:.3f} | {median[k] / median['enrol']:.1f} |" for name, k in rows),
        "",
        f"`history` (read the log of {logged} lines): {history_s:.4f} s. Loading the index (median of 3): "
        f"{load_before:.2f} s before the commits, {load_after:.2f} s after them.",
        "",
        f"Reproduce: `python benchmarks/curation_cost.py --size {args.size} --repeats {args.repeats}`",
    ]
    (RESULTS / f"curation_cost_{args.size}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
