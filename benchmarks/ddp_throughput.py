"""Issue 14 benchmark: training throughput of one process against two DDP processes (torchrun, gloo),
fine-tuning on the nyala training photos, on this machine.

Each run: `train-embed --mode finetune` with no held-out identities (no validation in the epoch
time), 2 epochs; throughput = images drawn per epoch (all processes) / epoch seconds, from the
second epoch (the first pays for warm-up). On a CPU the processes share the cores
(`torch.set_num_threads(cores // processes)`), so this measures DDP's overhead more than its gain;
docs/scale.md has the formulas for N GPUs.

    python benchmarks/ddp_throughput.py --image-size 128
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from common import RESULTS, ROOT, SHARED


def run(processes: int, work: Path, image_size: int, epochs: int) -> dict:
    out = work / f"nproc{processes}"
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable, str(ROOT / "cli.py"), "train-embed", "--data", str(SHARED / "nyala"), "--out", str(out),
        "--mode", "finetune", "--image-size", str(image_size), "--epochs", str(epochs), "--quiet",
        "--set", "train.holdout_fraction=0", "--nproc", str(processes),
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT)
    log = json.loads((out / "train_log.json").read_text())
    seconds = [row["seconds"] for row in log["history"]]
    return {
        "processes": processes,
        "images_per_epoch": log["images_per_epoch"],
        "epoch_seconds": seconds,
        "images_per_s": log["images_per_epoch"] / seconds[-1],
        "losses": log["epoch_losses"],
        "threads_per_process": log["threads"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-ddp")
    args = parser.parse_args()
    rows = [run(n, args.work, args.image_size, args.epochs) for n in (1, 2)]
    cores = len(os.sched_getaffinity(0))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ddp_throughput.json").write_text(json.dumps({"cores": cores, "runs": rows}, indent=2))
    lines = [
        f"# DDP training throughput: 1 vs 2 processes ({cores} CPU cores, nyala train, finetune, {args.image_size} px)",
        "",
        "| processes | threads each | images per epoch | epoch seconds | images/s (last epoch) | loss per epoch |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r['processes']} | {r['threads_per_process']} | {r['images_per_epoch']} | "
            f"{', '.join(f'{s:.0f}' for s in r['epoch_seconds'])} | {r['images_per_s']:.1f} | "
            f"{', '.join(f'{v:.2f}' for v in r['losses'])} |"
            for r in rows
        ],
        "",
        f"Ratio 2 processes / 1: {rows[1]['images_per_s'] / rows[0]['images_per_s']:.2f}. Both runs share the same "
        f"{cores} cores, so this is DDP's net effect on one machine, not a speed-up from more hardware: it pays "
        "for the gradient all-reduce over gloo (and the gathered pairwise loss when one is used), and gains where "
        "single-threaded processes keep the cores busier than one process's intra-op threads (small tensors at "
        "this image size split poorly across threads).",
        "",
        f"Reproduce: `python benchmarks/ddp_throughput.py --image-size {args.image_size}`",
    ]
    (RESULTS / "ddp_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
