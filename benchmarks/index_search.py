"""Issue 4 benchmark: search backends from 10k to 1M gallery vectors, in one run on one machine.

Vectors: Kenning embeddings of every photo in ../shared/data (nyala + lions) from `--model`,
replicated with small Gaussian noise (a copy's cosine to its source is about 0.96) to 10k, 100k
and 1M vectors; 1000 queries are fresh noisy copies. Per backend: build time, index bytes,
resident memory added, queries/s batched and one at a time, recall@10 against exact search.
Also: the single-query exact latency against the memory-bandwidth bound (index bytes / a
measured all-threads streaming read), and the latency of enrolling one identity into the 1M
index. Finished rows are kept in the results file and skipped on a re-run.

    python cli.py train-embed --config configs/cpu-quick.yaml --data ../shared/data/nyala \
        --out runs/bench-index-model --set train.cache_views=0
    python benchmarks/index_search.py --model runs/bench-index-model
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, SHARED

NOISE = 0.3  # norm of the noise added to a unit vector before renormalising
K = 10
COLUMNS = [
    "size",
    "method",
    "index_type",
    "search_params",
    "build_s",
    "index_mib",
    "rss_mib",
    "batch_qps",
    "single_ms",
    "single_qps",
    "recall@10",
    "speedup_vs_exact",
]


def real_embeddings(model_dir: Path, work: Path) -> np.ndarray:
    """Embeddings of every photo in ../shared/data, cached in `work` per model fingerprint."""
    from kenning.data.readers import read_dataset
    from kenning.embeddings.checkpoint import load_model
    from kenning.embeddings.inference import embed_paths, manifest_transform

    model, manifest = load_model(model_dir)
    cache = work / f"embeddings-{manifest.fingerprint}.npy"
    if cache.is_file():
        return np.load(cache)
    paths = [p for name in ("nyala", "lions") for p in read_dataset(SHARED / name)["path"]]
    vectors = embed_paths(model, paths, manifest_transform(manifest)).vectors
    work.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def replicate(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        noise = rng.standard_normal((m, real.shape[1]), dtype=np.float32) * (NOISE / np.sqrt(real.shape[1]))
        chunk = real[rng.integers(0, len(real), m)] + noise
        out[start : start + m] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def bandwidth_gbs(array: np.ndarray, threads: int, repeats: int = 7) -> float:
    """Best all-threads streaming read of `array` (numpy reductions release the GIL)."""
    parts = np.array_split(array, threads)
    best = np.inf
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - t)
    return array.nbytes / best / 1e9


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)]))


def numpy_search(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k by one matrix product per block of 64 queries (bounded memory at 1M)."""
    out = []
    for start in range(0, len(q), 64):
        scores = q[start : start + 64] @ x.T
        top = np.argpartition(scores, x.shape[0] - k, axis=1)[:, -k:]
        out.append(np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1))
    return np.concatenate(out)


def timed_search(search, queries: np.ndarray, single: int) -> tuple[np.ndarray, float, float]:
    """(ids of a batched search, batched queries/s, median single-query ms over `single` queries)."""
    search(queries[:2])  # warm-up
    t = time.perf_counter()
    ids = search(queries)
    qps = len(queries) / (time.perf_counter() - t)
    times = []
    for q in queries[:single]:
        t = time.perf_counter()
        search(q[None])
        times.append(time.perf_counter() - t)
    return ids, qps, float(np.median(times) * 1000)


def structures(size: int, dim: int) -> list[tuple[str, str, str, list[str]]]:
    """(method, backend, index type, search params to sweep) for a gallery of `size`."""
    from kenning.index.faiss_index import choose_index_type, default_search_params, ivf_lists

    auto = choose_index_type(size, dim)
    nlist = ivf_lists(size)
    ivf = f"IVF{nlist},Flat"
    probes = [f"nprobe={p}" for p in (4, 8, 16, 32) if p <= nlist]
    rows = [("FAISS Flat (exact)", "faiss", "Flat", [""])]
    default = default_search_params(ivf)
    rows.append(("FAISS IVF,Flat", "faiss", ivf, sorted(set([*probes, default]), key=lambda s: int(s.split("=")[1]))))
    rows.append(("FAISS HNSW32", "faiss", "HNSW32", ["efSearch=64", "efSearch=128"]))
    # k_factor_rf=1 re-orders only the k PQ results, so its recall is that of IVF,PQ alone
    rows.append(
        (
            "FAISS IVF,PQ64 (+ exact re-rank)",
            "faiss",
            f"IVF{nlist},PQ64,RFlat",
            [f"{default},k_factor_rf={f}" for f in (1, 4, 32)],
        )
    )
    rows.append(("Annoy 64 trees", "annoy", "trees=64", ["search_k=2000", "search_k=10000", "search_k=40000"]))
    for i, (method, backend, index_type, params) in enumerate(rows):
        if backend == "faiss" and index_type == auto:
            rows[i] = (method + " [default]", backend, index_type, params)
    return rows


def run_size(size: int, real: np.ndarray, args: argparse.Namespace, results: dict, save) -> None:
    from kenning.index.backend import create_index

    base = replicate(real, size, seed=size)
    queries = replicate(real, args.queries, seed=size + 1)
    exact = numpy_search(base, queries, K)
    threads = max(1, len(__import__("os").sched_getaffinity(0)))

    key = f"{size}/numpy brute"
    if key not in results:
        _, qps, single = timed_search(lambda q: numpy_search(base, q, K), queries, args.single)
        results[key] = dict(
            size=size,
            method="numpy brute",
            index_type="-",
            search_params="",
            build_s=0.0,
            index_mib=base.nbytes / 2**20,
            rss_mib=0.0,
            batch_qps=qps,
            single_ms=single,
            single_qps=1000 / single,
            **{"recall@10": 1.0},
        )
        save()
    exact_qps = None
    for method, backend, index_type, params_list in structures(size, base.shape[1]):
        keys = [f"{size}/{method}/{p}" for p in params_list]
        if all(k in results for k in keys):
            if index_type == "Flat":
                exact_qps = results[keys[0]]["batch_qps"]
            continue
        if backend == "faiss" and "HNSW" in index_type and size > args.hnsw_max:
            continue
        rss0 = rss_mib()
        t = time.perf_counter()
        index = create_index(backend, base.shape[1], size, index_type, params_list[0])
        index.add(base, np.arange(size), progress=True)
        work = Path(tempfile.mkdtemp(dir=args.work))
        path = work / f"index.{backend}"
        index.save(path)  # Annoy builds its trees on disk here
        build_s = time.perf_counter() - t
        files = sum(p.stat().st_size for p in work.iterdir())
        rss = rss_mib() - rss0
        for key, params in zip(keys, params_list, strict=True):
            index.set_search_params(params)
            ids, qps, single = timed_search(lambda q, index=index: index.search(q, K)[1], queries, args.single)
            results[key] = dict(
                size=size,
                method=method,
                index_type=index_type,
                search_params=params,
                build_s=build_s,
                index_mib=files / 2**20,
                rss_mib=rss,
                batch_qps=qps,
                single_ms=single,
                single_qps=1000 / single,
                **{"recall@10": recall(ids, exact)},
            )
            print(json.dumps(results[key]), flush=True)
            save()
        if index_type == "Flat":
            exact_qps = results[keys[0]]["batch_qps"]
            bound_key = f"{size}/bandwidth"
            if size >= 100_000 and bound_key not in results:
                bw = bandwidth_gbs(base, threads)
                bound_ms = base.nbytes / (bw * 1e9) * 1000
                results[bound_key] = dict(
                    size=size,
                    bandwidth_gbs=bw,
                    bound_ms=bound_ms,
                    threads=threads,
                    flat_single_ms=results[keys[0]]["single_ms"],
                    numpy_single_ms=results[f"{size}/numpy brute"]["single_ms"],
                    ratio=results[keys[0]]["single_ms"] / bound_ms,
                )
                save()
        del index
        shutil.rmtree(work, ignore_errors=True)
    for key, row in results.items():
        if key.startswith(f"{size}/") and "batch_qps" in row and exact_qps:
            row["speedup_vs_exact"] = row["batch_qps"] / exact_qps
    save()
    if args.enroll and f"{size}/enroll" not in results:
        results[f"{size}/enroll"] = enroll_latency(base, real, args)
        save()


def enroll_latency(base: np.ndarray, real: np.ndarray, args: argparse.Namespace) -> dict:
    """Index-side latency of enrolling one identity (3 photos) into a saved gallery of the default type,
    with the checks every enrolment makes against the label table (unique image ids, same bytes)."""
    from kenning.config import IndexConfig
    from kenning.embeddings.checkpoint import load_model
    from kenning.index import store
    from kenning.index.gallery import GalleryIndex

    _, manifest = load_model(args.model)
    n = len(base)
    index = GalleryIndex.new(manifest, args.model, IndexConfig(), size=n)
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]  # as build-index stores them
    index.add(base, [f"img{i}.jpg" for i in range(n)], [f"id{i % 5000}" for i in range(n)], [""] * n, digests, True)
    work = Path(tempfile.mkdtemp(dir=args.work))
    t = time.perf_counter()
    index.save(work)
    save_s = time.perf_counter() - t
    new = replicate(real[:1], 3, seed=7)
    times = []
    for i in range(5):
        t = time.perf_counter()
        names = [f"img{j}.jpg" for j in range(3)]  # names the base holds: made unique, as a real catalogue's
        new_digests = [hashlib.sha256(f"new{i}-{j}".encode()).hexdigest() for j in range(3)]
        store.enroll(work, new, names, [f"new-identity-{i}"] * 3, [""] * 3, new_digests)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    index.refresh(work)  # a running query process picks the enrolment up
    refresh_ms = (time.perf_counter() - t) * 1000
    _, ids = index.search(new[:1], K)
    found = index.labels_of(ids)[0, 0]
    t = time.perf_counter()
    reopened = GalleryIndex.load(work)
    load_s = time.perf_counter() - t
    shutil.rmtree(work, ignore_errors=True)
    return dict(
        size=n,
        index_type=index.manifest.index_type,
        save_full_s=save_s,
        load_s=load_s,
        enroll_ms_median=float(np.median(times) * 1000),
        refresh_ms=refresh_ms,
        enroll_ms_max=float(np.max(times) * 1000),
        found_after_enroll=str(found),
        count_after=len(reopened),
    )


def write_markdown(results: dict, path: Path) -> None:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in results.values():
        if "batch_qps" not in row:
            continue
        cells = []
        for c in COLUMNS:
            v = row.get(c, "")
            cells.append(
                f"{v:.3f}"
                if isinstance(v, float) and c == "recall@10"
                else f"{v:.1f}"
                if isinstance(v, float)
                else str(v)
            )
        lines.append("| " + " | ".join(cells) + " |")
    for row in results.values():
        if "bandwidth_gbs" in row:
            lines.append(
                f"\nSingle exact query at {row['size']}: FAISS Flat {row['flat_single_ms']:.1f} ms, numpy "
                f"{row['numpy_single_ms']:.1f} ms; bandwidth {row['bandwidth_gbs']:.1f} GB/s "
                f"({row['threads']} threads) -> bound {row['bound_ms']:.1f} ms; ratio {row['ratio']:.2f}"
            )
        if "enroll_ms_median" in row:
            lines.append(
                f"\nEnroll one identity (3 photos) into {row['size']} ({row['index_type']}): median "
                f"{row['enroll_ms_median']:.1f} ms, max {row['enroll_ms_max']:.1f} ms (a loaded index picks it up in "
                f"{row['refresh_ms']:.1f} ms); full save {row['save_full_s']:.1f} s, "
                f"load {row['load_s']:.1f} s; top match after enroll: {row['found_after_enroll']}"
            )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--hnsw-max", type=int, default=1_000_000, help="skip HNSW above this size")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "index-bench")
    parser.add_argument("--enroll", action="store_true", help="also time enrolment into each size's default index")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "index_search" + (f"_{args.tag}" if args.tag else "")
    out = RESULTS / f"{stem}.json"
    results = json.loads(out.read_text()) if out.is_file() else {}

    def save() -> None:
        out.write_text(json.dumps(results, indent=2))
        write_markdown(results, RESULTS / f"{stem}.md")

    real = real_embeddings(args.model, args.work)
    print(f"{len(real)} real embeddings, {real.shape[1]}-d", flush=True)
    for size in args.sizes:
        run_size(size, real, args, results, save)


if __name__ == "__main__":
    main()
