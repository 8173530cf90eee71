"""Soak: several processes enrol, forget and compact one index at random while being SIGKILLed at
random; afterwards every acknowledged operation is present and nothing else is.

Each worker writes an intent line before an operation and an ack line after it returns (both
fsynced). An operation with an intent but no ack was killed mid-way: it may or may not have
committed ("in doubt"), and either outcome is correct. Checked at the end:
- the index loads, its counts agree with its files;
- every acknowledged enrolment not later forgotten is present, with the vector it was enrolled with;
- every acknowledged forget is absent; nothing is present that no worker enrolled; image ids unique;
- the base images (never forgotten) are all there;
- after one more commit, no temporary file and no unnamed generation file is left.

    python benchmarks/soak_catalogue.py --seconds 180
Results: benchmarks/results/soak_catalogue.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import ROOT

from kenning.index.manifest import GENERATION_FILE, read_index_manifest

DIM = 64
BASE = 2000
LABELS = 20
TEMPS = "temporaries_left_by_kills_before_final_commit"


def vector(worker: int, n: int) -> np.ndarray:
    v = np.random.default_rng([worker, n]).standard_normal((1, DIM)).astype(np.float32)
    return v / np.linalg.norm(v)


def read_log(path: Path) -> list[dict]:
    """The complete lines of a worker's log (a line cut by a kill is ignored)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def worker(index_dir: Path, log_path: Path, w: int) -> None:
    from kenning.errors import KenningError
    from kenning.index import store

    entries = read_log(log_path)
    n = max((e["n"] for e in entries), default=-1) + 1
    acked = {e["n"]: e for e in entries if e["phase"] == "ack"}
    mine = {e["image_id"] for e in acked.values() if e["op"] == "enroll"}
    mine -= {e["image_id"] for e in acked.values() if e["op"] == "forget"}
    mine -= {e["image_id"] for e in entries if e["op"] == "forget"}  # in-doubt forgets too
    rng = random.Random(os.getpid())
    with open(log_path, "a") as log:

        def note(entry: dict) -> None:
            log.write(json.dumps(entry) + "\n")
            log.flush()
            os.fsync(log.fileno())

        while True:
            roll = rng.random()
            if roll < 0.6 or not mine:
                entry = {"op": "enroll", "n": n, "image_id": f"w{w}-{n}", "label": f"soak-{rng.randrange(LABELS)}"}
                note({**entry, "phase": "intent"})
                store.enroll(index_dir, vector(w, n), [entry["image_id"]], [entry["label"]], [""])
                mine.add(entry["image_id"])
            elif roll < 0.85:
                target = rng.choice(sorted(mine))
                entry = {"op": "forget", "n": n, "image_id": target}
                note({**entry, "phase": "intent"})
                mine.discard(target)
                try:
                    store.forget(index_dir, image_ids=[target])
                except KenningError:  # an in-doubt enrolment that never committed
                    entry["noop"] = True
            else:
                entry = {"op": "compact", "n": n}
                note({**entry, "phase": "intent"})
                store.compact(index_dir)
            note({**entry, "phase": "ack"})
            n += 1


def make_index(index_dir: Path) -> None:
    from kenning.config import IndexConfig
    from kenning.embeddings.checkpoint import ModelManifest
    from kenning.index.gallery import GalleryIndex

    model = ModelManifest("soak", 8, [0.5] * 3, [0.5] * 3, DIM, DIM, 3.0, fingerprint="soak")
    index = GalleryIndex.new(model, "/nowhere", IndexConfig(), size=BASE)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((BASE, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    index.add(v, [f"base-{i}" for i in range(BASE)], [f"base-{i % 100}" for i in range(BASE)], [""] * BASE)
    index.save(index_dir)


def verify(index_dir: Path, logs: list[Path]) -> dict:
    from kenning.atomic import ANY_TEMPORARY
    from kenning.index import store
    from kenning.index.gallery import GalleryIndex

    temporaries_before = sorted(p.name for p in index_dir.iterdir() if ANY_TEMPORARY.match(p.name))
    index = GalleryIndex.load(index_dir)
    table = index.table
    present = set(table["image_id"])
    enrolled_acked, enrolled_doubt, forgot_acked, forgot_doubt = set(), set(), set(), set()
    counts = {"enroll": 0, "forget": 0, "compact": 0, "in_doubt": 0, "forget_noop": 0}
    expected_vectors = {}
    for w, log in enumerate(logs):
        entries = read_log(log)
        acked = {e["n"] for e in entries if e["phase"] == "ack"}
        for e in entries:
            if e["phase"] != "intent":
                if e.get("noop"):
                    counts["forget_noop"] += 1
                continue
            done = e["n"] in acked
            counts[e["op"] if done else "in_doubt"] += 1
            if e["op"] == "enroll":
                (enrolled_acked if done else enrolled_doubt).add(e["image_id"])
                expected_vectors[e["image_id"]] = vector(w, e["n"])[0]
            elif e["op"] == "forget":
                (forgot_acked if done else forgot_doubt).add(e["image_id"])
    must_be_there = enrolled_acked - forgot_acked - forgot_doubt
    enrolled_present = present - {f"base-{i}" for i in range(BASE)}
    rows = table.set_index("image_id")
    vector_mismatch = sum(
        not np.allclose(index.vectors_of(np.array([rows.loc[i, "id"]]))[0], expected_vectors[i], atol=1e-6)
        for i in enrolled_present
        if i in expected_vectors
    )
    checks = {
        "index loads, counts agree": True,
        "acknowledged enrolments present": not (must_be_there - present),
        "acknowledged forgets absent": not (forgot_acked & present),
        "nothing present that was never enrolled": enrolled_present <= enrolled_acked | enrolled_doubt,
        "image ids unique": bool(table["image_id"].is_unique),
        "all base images present": all(f"base-{i}" in present for i in range(BASE)),
        "enrolled vectors intact": vector_mismatch == 0,
    }
    store.enroll(index_dir, vector(99, 0), ["final"], ["final"], [""])  # one more commit sweeps
    m = read_index_manifest(index_dir)
    named = {m.base_file, m.base_table, m.delta_file, m.removed_file}
    left = sorted(
        p.name
        for p in index_dir.iterdir()
        if ANY_TEMPORARY.match(p.name) or (GENERATION_FILE.match(p.name) and p.name not in named)
    )
    checks["no temporary or unnamed generation file after the next commit"] = not left
    return {
        "checks": checks,
        "operations_acknowledged": {k: counts[k] for k in ("enroll", "forget", "compact")},
        "operations_in_doubt": counts["in_doubt"],
        "in_doubt_enrolments_present": len(enrolled_doubt & present),
        "forgets_of_uncommitted_enrolments": counts["forget_noop"],
        "enrolled_images_present": len(enrolled_present),
        "missing_acknowledged": sorted(must_be_there - present)[:10],
        TEMPS: temporaries_before,
        "left_after_final_commit": left,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, nargs=2, default=(0.5, 3.0), help="seconds between kills")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "soak")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    index_dir = args.work / "index"
    if args.worker is not None:
        worker(index_dir, args.work / f"log-{args.worker}.jsonl", args.worker)
        return

    import shutil

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    make_index(index_dir)
    logs = [args.work / f"log-{w}.jsonl" for w in range(args.workers)]

    def spawn(w: int) -> subprocess.Popen:
        cmd = [sys.executable, __file__, "--worker", str(w), "--work", str(args.work)]
        return subprocess.Popen(cmd, cwd=ROOT, stderr=open(args.work / f"stderr-{w}.txt", "a"))

    procs = [spawn(w) for w in range(args.workers)]
    rng = random.Random(0)
    kills = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(*args.kill_every))
        w = rng.randrange(args.workers)
        procs[w].send_signal(signal.SIGKILL)
        procs[w].wait()
        kills += 1
        procs[w] = spawn(w)
        for i, p in enumerate(procs):  # a worker that died by itself is a failure, not a kill
            if p.poll() is not None:
                raise SystemExit(f"worker {i} exited with {p.returncode}: see {args.work / f'stderr-{i}.txt'}")
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    kills += len(procs)
    result = {"seconds": args.seconds, "workers": args.workers, "sigkills": kills, **verify(index_dir, logs)}
    result["passed"] = all(result["checks"].values())
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "soak_catalogue.json").write_text(json.dumps(result, indent=2) + "\n")
    ops = result["operations_acknowledged"]
    lo, hi = args.kill_every
    lines = [
        "# Soak: random enrol / forget / compact under random SIGKILLs",
        "",
        f"`python benchmarks/soak_catalogue.py --seconds {args.seconds:g} --kill-every {lo:g} {hi:g}`: "
        f"{args.workers} processes, one index of {BASE} base images, {kills} SIGKILLs.",
        "",
        f"- acknowledged: {ops['enroll']} enrolments, {ops['forget']} forgets, {ops['compact']} compactions",
        f"- in doubt (killed between intent and ack): {result['operations_in_doubt']}, of which enrolments found "
        f"committed: {result['in_doubt_enrolments_present']}",
        f"- temporaries left by kills before the final commit: {len(result[TEMPS])}",
        "",
        "| check | result |",
        "|---|---|",
        *(f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in result["checks"].items()),
        "",
    ]
    (args.results / "soak_catalogue.md").write_text("\n".join(lines))
    print("\n".join(lines))
    if not result["passed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
