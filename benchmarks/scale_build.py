"""Issue 14 benchmark: an IVF-PQ index of millions of vectors built from embedding chunks, streamed,
against the same build holding every vector in memory; and search settings told apart by recall.

Vectors: Kenning embeddings of every photo in ../shared/data (nyala + lions) from `--model`, and a
mixture fitted to them (k-means centres, each with the diagonal spread of its members, sampled
and L2-normalised), so neighbours are draws from the same distribution, not noisy copies of 2674
photos (where every nprobe gave recall@10 1.000 and settings could not be told apart). They are
written as a `kenning embed` folder in chunks, then indexed twice, each build in its own process
so its peak resident memory (ru_maxrss) is its own:
- streamed: `kenning build-index --embeddings` (train on a sample, add chunk by chunk);
- in memory: every vector read into one array first (what a build from images holds), then added.
Then the streamed index's search settings: recall@10 against exact search and queries/s per nprobe.

    python cli.py train-embed --config configs/cpu-quick.yaml --data ../shared/data/nyala \\
        --out runs/bench-scale/model --set train.cache_views=0 --epochs 10
    python benchmarks/scale_build.py --model runs/bench-scale/model --size 5000000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import RESULTS, ROOT, SHARED

CLUSTERS = 256
CHUNK = 100_000
QUERIES = 1000


def real_embeddings(model_dir: Path, work: Path) -> np.ndarray:
    from kenning.data.readers import read_dataset
    from kenning.embeddings.checkpoint import load_model
    from kenning.embeddings.inference import embed_paths, manifest_transform

    model, manifest = load_model(model_dir)
    cache = work / f"real-{manifest.fingerprint}.npy"
    if not cache.is_file():
        paths = [p for name in ("nyala", "lions") for p in read_dataset(SHARED / name)["path"]]
        np.save(cache, embed_paths(model, paths, manifest_transform(manifest)).vectors)
    return np.load(cache)


class Mixture:
    """k-means components of the real embeddings; a draw is a component's centre plus its members'
    spread along the real data's top principal directions, plus a little isotropic noise: real
    embeddings vary in few directions, so neighbours stay tellable apart (full-rank Gaussian noise
    in 512 dimensions makes every point nearly equidistant from every other)."""

    def __init__(self, real: np.ndarray, seed: int = 0, rank: int = 48):
        import faiss

        kmeans = faiss.Kmeans(real.shape[1], CLUSTERS, niter=20, seed=seed, spherical=True)
        kmeans.train(real)
        _, assign = kmeans.index.search(real, 1)
        assign = assign[:, 0]
        centred = real - real.mean(axis=0)
        self.basis = np.linalg.svd(centred, full_matrices=False)[2][:rank]  # (rank, dim)
        coords = (real - kmeans.centroids[assign]) @ self.basis.T
        residual = (real - kmeans.centroids[assign]) - coords @ self.basis
        self.noise = float(residual.std())
        self.centres = kmeans.centroids
        self.weights = np.bincount(assign, minlength=CLUSTERS) / len(real)
        fallback = coords.std(axis=0)
        self.spread = np.stack(
            [coords[assign == c].std(axis=0) if (assign == c).sum() > 2 else fallback for c in range(CLUSTERS)]
        )

    def components(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """The component of each of n draws: the generator's first draw, so the labels of a chunk
        are known without drawing its vectors."""
        return rng.choice(CLUSTERS, n, p=self.weights)

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        cluster = self.components(rng, n)
        coords = self.spread[cluster] * rng.standard_normal((n, len(self.basis)))
        x = self.centres[cluster] + coords @ self.basis + self.noise * rng.standard_normal((n, self.centres.shape[1]))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), cluster


def write_synthetic(model_dir: Path, real: np.ndarray, size: int, out: Path) -> None:
    """A `kenning embed` folder of `size` mixture vectors (resumable: finished chunks are kept)."""
    from kenning.embeddings.checkpoint import read_manifest
    from kenning.embeddings.shards import EmbeddingsManifest, chunk_name, rows_digest, start_folder, write_chunk

    ids = [f"s{i}" for i in range(size)]
    rows = pd.DataFrame({"image_id": ids, "label": "", "path": ids, "part": "gallery"})
    mixture = Mixture(real)
    chunks = -(-size // CHUNK)
    labels = np.empty(size, dtype=object)
    for c in range(chunks):  # the labels: each chunk's mixture components, as sample() will draw them
        cluster = mixture.components(np.random.default_rng(c), min(CHUNK, size - c * CHUNK))
        labels[c * CHUNK : c * CHUNK + len(cluster)] = [f"c{k}" for k in cluster]
    rows["label"] = labels
    model = dataclasses.asdict(read_manifest(model_dir))
    manifest = EmbeddingsManifest(str(model_dir.resolve()), model, False, CHUNK, size, rows_digest(rows))
    start_folder(out, manifest, rows)
    for c in range(chunks):
        if (out / chunk_name(c)).is_file():
            continue
        part = rows.iloc[c * CHUNK : (c + 1) * CHUNK]
        vectors, _ = mixture.sample(len(part), seed=c)
        write_chunk(out, c, part.assign(sha256=""), vectors, np.ones(len(part), bool))
        print(f"wrote chunk {c + 1}/{chunks}", flush=True)


def measured(command: list[str]) -> dict:
    """Run `command`; its wall time and the peak resident memory of its process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"{command} failed with status {status}")
    return {"seconds": time.perf_counter() - start, "peak_rss_gib": usage.ru_maxrss / 2**20}


def build_in_memory(embeddings: Path, out: Path, index_type: str) -> None:
    """Every vector in one array first, then one add: the build from images, without the images."""
    from kenning.config import IndexConfig
    from kenning.embeddings.shards import EmbeddingSet
    from kenning.index.gallery import GalleryIndex

    folder = EmbeddingSet(embeddings)
    rows = folder.table("gallery")
    vectors = np.empty((len(rows), folder.dim), dtype=np.float32)  # as embed_paths fills its output
    done = 0
    for part, found in folder.chunks("gallery"):
        vectors[done : done + len(part)] = found
        done += len(part)
    cfg = IndexConfig(index_type=index_type, search_params="nprobe=16", threshold=0.5)
    index = GalleryIndex.new(folder.manifest.model_manifest, folder.manifest.model_dir, cfg, len(vectors))
    columns = (rows[c].tolist() for c in ("image_id", "label", "path", "sha256"))
    index.add(vectors, *columns)
    index.save(out)
    print(f"in memory: held {vectors.nbytes / 2**30:.2f} GiB of vectors", flush=True)


def sweep(index_dir: Path, embeddings: Path) -> list[dict]:
    """recall@10 against exact search and batched queries/s of each nprobe, on the streamed index."""
    from kenning.embeddings.shards import EmbeddingSet
    from kenning.index.gallery import GalleryIndex
    from kenning.index.tuning import exact_top_ids, measure

    index = GalleryIndex.load(index_dir)
    folder = EmbeddingSet(embeddings)
    ids = index.base_table.set_index("path")["id"]
    rng = np.random.default_rng(1)
    _, first_vectors = next(folder.chunks("gallery"))
    pick = rng.choice(len(first_vectors), QUERIES, replace=False)
    mixture_queries = first_vectors[pick]  # gallery vectors as queries, as the tuning does
    truth = exact_top_ids(mixture_queries, ((v, ids[r["path"]].to_numpy()) for r, v in folder.chunks("gallery")), 10)
    rows = []
    nlist = int(index.manifest.index_type.split(",")[0][3:])
    for p in [2**i for i in range(int(np.log2(nlist)) + 1) if 2**i <= 64]:
        recall, qps = measure(index.base, f"nprobe={p}", mixture_queries, truth)
        rows.append({"nprobe": p, "recall@10": round(recall, 4), "qps": round(qps, 1)})
        print(rows[-1], flush=True)
    return rows


def flat_sweep(embeddings: Path, size: int, index_type: str) -> None:
    """nprobe against recall on an IVF-Flat index of the first `size` vectors (no PQ codes capping
    recall): the settings the tuning chooses between, told apart."""
    from kenning.embeddings.shards import EmbeddingSet
    from kenning.index.faiss_index import FaissIndex
    from kenning.index.tuning import TUNING_QUERIES, exact_top_ids, measure, tune_search_params

    parts = []
    for _, found in EmbeddingSet(embeddings).chunks("gallery"):
        parts.append(found)
        if sum(map(len, parts)) >= size:
            break
    vectors = np.concatenate(parts)[:size]
    ids = np.arange(len(vectors))
    index = FaissIndex.create(vectors.shape[1], index_type)
    start = time.perf_counter()
    index.add(vectors, ids)
    built = time.perf_counter() - start
    queries = vectors[np.random.default_rng(2).choice(len(vectors), TUNING_QUERIES, replace=False)]
    truth = exact_top_ids(queries, [(vectors[a : a + CHUNK], ids[a : a + CHUNK]) for a in range(0, size, CHUNK)], 10)
    point = tune_search_params(index, queries, truth, 0.95, 10)
    rows = []
    for p in [2**i for i in range(9)]:
        recall, qps = measure(index, f"nprobe={p}", queries, truth)
        rows.append({"nprobe": p, "recall@10": round(recall, 4), "qps": round(qps, 1)})
    lines = [
        f"# Search settings told apart: {index_type} over {size:,} mixture vectors",
        "",
        f"The first {size:,} vectors of the 5M benchmark set (`scale_build.py`), built in {built:.0f} s; "
        f"{TUNING_QUERIES} gallery vectors as queries, recall@10 against exact search, batched queries/s.",
        "",
        f"Tuned (`build-index --search-params auto`, target 0.95): `{point.search_params}`, recall@10 "
        f"{point.recall:.3f}, {point.qps:.0f} queries/s.",
        "",
        *_nprobe_table(rows),
        f"Reproduce: `python benchmarks/scale_build.py --phase flat-sweep --size {size} --index-type {index_type}`",
    ]
    _write(f"scale_tuning_{size}", lines)


def _nprobe_table(rows: list[dict]) -> list[str]:
    return [
        f"| nprobe | recall@10 vs exact | queries/s (batch of {QUERIES}) |",
        "|---|---|---|",
        *[f"| {r['nprobe']} | {r['recall@10']:.3f} | {r['qps']:.0f} |" for r in rows],
        "",
    ]


def _shown(path: Path) -> str:
    """A path as the reader would type it: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def _write(name: str, lines: list[str]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "bench-scale" / "model")
    parser.add_argument("--size", type=int, default=5_000_000)
    parser.add_argument("--index-type", default="IVF1024,PQ64")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-scale")
    parser.add_argument("--phase", choices=["all", "in-memory", "flat-sweep"], default="all")
    parser.add_argument("--embeddings", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.phase == "in-memory":
        build_in_memory(args.embeddings, args.out, args.index_type)
        return
    if args.phase == "flat-sweep":
        flat_sweep(args.embeddings or args.work / "emb-5000000", args.size, args.index_type)
        return

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    real = real_embeddings(args.model, work)
    embeddings = work / f"emb-{args.size}"
    timing = work / f"emb-{args.size}.seconds.json"  # beside the folder: it holds only what embed writes
    start = time.perf_counter()
    write_synthetic(args.model, real, args.size, embeddings)
    if not timing.is_file():
        timing.write_text(json.dumps({"write_chunks_s": time.perf_counter() - start}))
    written = json.loads(timing.read_text())["write_chunks_s"]
    streamed_dir, memory_dir = work / f"index-streamed-{args.size}", work / f"index-memory-{args.size}"
    for folder in (streamed_dir, memory_dir):
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    kenning = [sys.executable, str(ROOT / "cli.py")]
    build = ["build-index", "--embeddings", str(embeddings), "--index-type", args.index_type, "--threshold", "0.5"]
    streamed = measured([*kenning, *build, "--out", str(streamed_dir)])
    phase = ["--phase", "in-memory", "--embeddings", str(embeddings), "--index-type", args.index_type]
    in_memory = measured([sys.executable, __file__, *phase, "--out", str(memory_dir)])
    manifest = json.loads((streamed_dir / "manifest.json").read_text())
    index_gib = (streamed_dir / manifest["base_file"]).stat().st_size / 2**30
    table_gib = (streamed_dir / manifest["base_table"]).stat().st_size / 2**30
    raw_gib = args.size * real.shape[1] * 4 / 2**30
    settings = sweep(streamed_dir, embeddings)
    result = {
        "size": args.size,
        "dim": int(real.shape[1]),
        "index_type": args.index_type,
        "raw_vectors_gib": raw_gib,
        "index_file_gib": index_gib,
        "label_table_file_gib": table_gib,
        "write_chunks_s": written,
        "streamed": streamed,
        "in_memory": in_memory,
        "operating_point": manifest["operating_point"],
        "nprobe_sweep": settings,
        "cpus": len(os.sched_getaffinity(0)),
    }
    RESULTS.mkdir(exist_ok=True)
    name = f"scale_build_{args.size}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# IVF-PQ build from embedding chunks: {args.size:,} vectors x {real.shape[1]} ({args.index_type})",
        "",
        f"Vectors: a {CLUSTERS}-component mixture fitted to Kenning embeddings of the {len(real)} shared photos "
        f"(model `{args.model.name}`), {raw_gib:.2f} GiB as float32, written in {CHUNK:,}-vector chunks "
        f"in {written:.0f} s. {result['cpus']} CPU cores; each build in its own process.",
        "",
        "| build | seconds | peak RSS GiB |",
        "|---|---|---|",
        f"| streamed (`build-index --embeddings`: sample -> train, add chunk by chunk, tune) | "
        f"{streamed['seconds']:.0f} | {streamed['peak_rss_gib']:.2f} |",
        f"| all vectors in memory, then one add | {in_memory['seconds']:.0f} | {in_memory['peak_rss_gib']:.2f} |",
        "",
        f"Index file {index_gib:.2f} GiB, label table file {table_gib:.2f} GiB. The streamed build's time "
        "includes its extra passes over the chunks (sample, add, exact neighbours of the tuning queries) and "
        "the tuning itself.",
        "",
        f"Tuned search setting (target recall@10 {manifest['operating_point']['target']}, "
        f"{manifest['operating_point']['queries']} gallery vectors as queries): "
        f"`{manifest['operating_point']['search_params']}`, recall@10 {manifest['operating_point']['recall']:.3f}, "
        f"{manifest['operating_point']['qps']:.0f} queries/s"
        + (
            ""
            if manifest["operating_point"]["reached"]
            else " (target not reached: the most accurate, or as good and faster, kept)"
        ),
        "",
        *_nprobe_table(settings),
        f"Reproduce: `python benchmarks/scale_build.py --model {_shown(args.model)} --size {args.size}`",
    ]
    _write(name, lines)


if __name__ == "__main__":
    main()
