"""Load on `kenning serve`: concurrent identify requests, then the same while another client enrols.

A gallery of N nyala images (`train` identities other than the model's held-out ones, then `test`;
ImageNet EfficientNet-Lite0 features, no training: the service's cost, not its accuracy, is
measured), served by a real `kenning serve` process on loopback. Phase 1: C clients x R identify
requests each (one photo per request, photos of nyala `test`). Phase 2: the same, while one more
client enrols E new identities (two photos each); afterwards every one of them must be listed.
Latency percentiles, throughput and errors per phase.

    python benchmarks/serve_load.py                      # 1000 images, 8 x 50, 20 enrolments
    python benchmarks/serve_load.py --local sift         # with the local stage (slower)

Writes benchmarks/results/serve_load[_local].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from common import RESULTS, ROOT, SHARED

from kenning.build import build_index
from kenning.config import load_config
from kenning.data.readers import read_dataset, select_split
from kenning.embeddings.checkpoint import load_holdout
from kenning.training.run import train_embedding

TOKEN = "load-benchmark"


def prepare(work: Path, gallery_size: int, local: str) -> tuple[Path, pd.DataFrame]:
    """Model (untrained, with held-out train identities to calibrate on) and index, reused when
    present; returns the index and its gallery table."""
    overrides = {
        "train.epochs": 0,
        "train.holdout_fraction": 0.3,  # enough held-out identities to calibrate on
        "model.embedding_dim": 0,
        "model.image_size": 224,
        "local.method": local,
    }
    cfg = load_config(None, overrides)
    table = read_dataset(SHARED / "nyala")
    train = select_split(table, "train")
    model = work / "model"
    if not model.exists():
        train_embedding(cfg, train, model)
    # The held-out identities calibrate the index, so they stay out of its gallery: the other
    # training identities, topped up from the test split.
    held_out = set(load_holdout(model)["label"])
    gallery = pd.concat([train[~train["label"].isin(held_out)], select_split(table, "eval")]).head(gallery_size)
    index = work / f"index-{gallery_size}-{local}"
    if not (index / "manifest.json").exists():
        build_index(model, gallery, cfg.index, index, local=cfg.local)
    return index, gallery


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def identify_worker(url: str, photos: list[Path], requests: int, offset: int, out: list, errors: list) -> None:
    with httpx.Client(timeout=120) as client:
        for i in range(requests):
            photo = photos[(offset + i) % len(photos)]
            started = time.perf_counter()
            try:
                response = client.post(f"{url}/identify", files=[("files", (photo.name, photo.read_bytes()))])
                ok = response.status_code == 200 and "error" not in response.json()["results"][0]
            except httpx.HTTPError as exc:
                ok, response = False, exc
            out.append(time.perf_counter() - started)
            if not ok:
                errors.append(str(getattr(response, "text", response))[:200])


def enrol_worker(url: str, identities: list[tuple[str, list[Path]]], out: list, errors: list) -> None:
    with httpx.Client(timeout=300, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        for label, photos in identities:
            started = time.perf_counter()
            files = [("files", (p.name, p.read_bytes())) for p in photos]
            response = client.post(f"{url}/identities/{label}/images", files=files)
            out.append(time.perf_counter() - started)
            if response.status_code != 200 or response.json()["errors"]:
                errors.append(response.text[:200])


def phase(url: str, photos: list[Path], clients: int, requests: int, enrol: list | None = None) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    enrol_latencies: list[float] = []
    threads = [
        threading.Thread(target=identify_worker, args=(url, photos, requests, c * requests, latencies, errors))
        for c in range(clients)
    ]
    if enrol:
        threads.append(threading.Thread(target=enrol_worker, args=(url, enrol, enrol_latencies, errors)))
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    result = {
        "requests": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "seconds": round(wall, 1),
        "identify_per_second": round(len(latencies) / wall, 2),
        **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)},
    }
    if enrol:
        result["enrolments"] = len(enrol_latencies)
        result["enrol_p50_ms"] = round(float(np.median(enrol_latencies)) * 1000, 1)
        result["enrol_max_ms"] = round(float(np.max(enrol_latencies)) * 1000, 1)
    return result


def _flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The command-line options that differ from their defaults (for the Reproduce line)."""
    changed = [(k, v) for k, v in vars(args).items() if k != "work" and v != parser.get_default(k)]
    return "".join(f" --{k.replace('_', '-')} {v}" for k, v in changed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--enrol", type=int, default=20)
    parser.add_argument("--local", default="none", choices=["none", "sift"])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-serve")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    index, gallery = prepare(args.work, args.gallery, args.local)
    test = select_split(read_dataset(SHARED / "nyala"), "eval")
    photos = [Path(p) for p in test["path"]]
    unseen = test[~test["label"].isin(set(gallery["label"]))]  # identities the gallery does not hold
    by_label = unseen.groupby("label")["path"].apply(list)
    newcomers = [(f"load-{i:02d}", [Path(p) for p in by_label.iloc[i][:2]]) for i in range(args.enrol)]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    photos_dir = args.work / f"photos-{time.time_ns()}"
    kenning = [sys.executable, str(ROOT / "cli.py")]
    command = [*kenning, "serve", "--index", str(index), "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--token", TOKEN, "--photos", str(photos_dir)], env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        before = httpx.get(f"{url}/health").json()
        phase(url, photos[:8], 2, 2)  # warm-up: first-request costs are not the steady state
        alone = phase(url, photos, 1, 20)  # one client: a request's own latency, no queueing
        reads = phase(url, photos, args.clients, args.requests)
        mixed = phase(url, photos[::-1], args.clients, args.requests, newcomers)
        listed = httpx.get(f"{url}/identities", params={"search": "load-", "limit": 1000}).json()
        after = httpx.get(f"{url}/health").json()
    finally:
        server.terminate()
        server.wait(timeout=30)
        # a fresh photos folder per run, and the enrolled index is this benchmark's own: undo its enrolments
        labels = [arg for label, _ in newcomers for arg in ("--label", label)]
        subprocess.run([*kenning, "forget", "--index", str(index), *labels], capture_output=True)
    present = {i["label"]: i["images"] for i in listed["identities"]}
    result = {
        "gallery_images": before["images"],
        "local": args.local,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "cores": os.cpu_count(),
        "one_client": alone,
        "identify_only": reads,
        "identify_while_enrolling": mixed,
        "enrolled_identities_listed": sum(1 for label, _ in newcomers if present.get(label) == 2),
        "images_after": after["images"],
    }
    print(json.dumps(result, indent=1))
    tag = "" if args.local == "none" else "_local"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"serve_load{tag}.json").write_text(json.dumps(result, indent=2))
    rows = "".join(
        f"| {name} | {r['requests']} | {r['errors']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
        f"| {r['identify_per_second']} |\n"
        for name, r in (
            ("one client, 20 requests", alone),
            (f"{args.clients} clients, identify only", reads),
            (f"{args.clients} clients, identify while enrolling {args.enrol}", mixed),
        )
    )
    md = (
        f"# kenning serve under load ({before['images']}-image nyala gallery, local: {args.local}, "
        f"{os.cpu_count()} cores, clients on the same machine)\n\n"
        f"{args.clients} clients x {args.requests} identify requests (one photo each), after one client alone.\n\n"
        "| phase | requests | errors | p50 ms | p95 ms | p99 ms | identify/s |\n|---|---|---|---|---|---|---|\n"
        f"{rows}\nEnrolments during phase 2: {mixed['enrolments']} (two photos each), p50 {mixed['enrol_p50_ms']} ms, "
        f"max {mixed['enrol_max_ms']} ms; listed afterwards with both photos: "
        f"{result['enrolled_identities_listed']} of {args.enrol}.\n\n"
        f"Reproduce: `python benchmarks/serve_load.py{_flags(args, parser)}`\n"
    )
    (RESULTS / f"serve_load{tag}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
