"""Issue 22 benchmark: viewpoint-aware matching and encounter answers, beside image-by-image answers.

Protocols A (re-identification across sightings, own sighting excluded) and B (catalogue with new
individuals) of ../shared/data/README.md on one index per protocol, built with `--local sift` and
viewpoint-aware matching (the default: a flank is matched against the same flank only), its fusion
calibrators and thresholds fitted on held-out training identities matched the same way. Each index
is scored per photo and per encounter (decision/encounters.py), for the embedding alone and fused,
with same-flank matching and, for the same index in the same session, with every photo matched
against every photo. The model is local_matching.py's (frozen-backbone triplet, trained on `train`).

    python benchmarks/encounters.py --dataset nyala
    python benchmarks/encounters.py --dataset lions --image-size 128 --set local.image_side=256

Writes benchmarks/results/encounters_<dataset>[_<tag>].{json,md}.
"""

from __future__ import annotations

import json
import time

from common import RESULTS
from local_matching import TRAIN, local_only, setup

from kenning.data.splits import catalogue_split
from kenning.eval.encounters import encounter_metrics
from kenning.eval.evaluate import evaluate
from kenning.eval.protocols import run_protocol
from kenning.recognizer import Recognizer

FIGURES = ["recall@1", "recall@5", "map@5", "gap", "known_accuracy", "unknown_accuracy"]


def main() -> None:
    args, cfg, work, model, images = setup(__doc__.splitlines()[0])
    rows = []
    for protocol in args.protocols.split(","):
        index_dir = work / f"{protocol}-views-index{'-' + args.tag if args.tag else ''}"
        closed = protocol == "reid"
        queries = images if closed else catalogue_split(images)[1]
        started = time.perf_counter()
        if not (args.reuse and (index_dir / "manifest.json").is_file()):
            run_protocol(protocol, model, images, cfg.index, index_dir, progress=False, local=cfg.local)
        built = time.perf_counter() - started
        recognizer = Recognizer.open(index_dir, progress=False)  # model and index loaded once per protocol
        for viewpoints in ("compatible", "any"):
            for system, local in (("embedding only", False), ("fused (Kenning)", True)):
                recognizer.configure(local=local, viewpoints=viewpoints)
                result = evaluate(recognizer, queries, closed_set=closed, exclude_sighting=closed)
                base = {"protocol": protocol, "viewpoints": viewpoints, "system": system}
                rows.append({**base, "answer": "photo", **{k: result.metrics.get(k) for k in FIGURES}})
                rows.append({**base, "answer": "encounter", **encounter_metrics(result)})
                if local:
                    rows.append({**base, "system": "local only (LNBNN)", "answer": "photo", **local_only(result)})
                print(json.dumps(rows[-3 if local else -2 :], indent=1), flush=True)
        rows[-1]["build_s"] = round(built, 1)
    stem = f"encounters_{args.dataset}{'_' + args.tag if args.tag else ''}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": args.dataset, "image_size": args.image_size, "train": TRAIN, "local": cfg.local.__dict__}
    protocols = args.protocols.split(",")
    if (RESULTS / f"{stem}.json").is_file():  # a run of some protocols keeps the others' rows
        earlier = json.loads((RESULTS / f"{stem}.json").read_text())["rows"]
        rows = [r for r in earlier if r["protocol"] not in protocols] + rows
    (RESULTS / f"{stem}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    lines = [
        f"# Viewpoints and encounters on {args.dataset} ({len(images)} evaluation images)",
        "",
        "| protocol | viewpoints | system | answer | " + " | ".join(FIGURES) + " |",
        "|---|---|---|---|" + "---|" * len(FIGURES),
    ]
    for r in rows:
        cells = ["-" if r.get(k) is None else f"{r[k]:.3f}" for k in FIGURES]
        lines.append(f"| {r['protocol']} | {r['viewpoints']} | {r['system']} | {r['answer']} | {' | '.join(cells)} |")
    sets = "".join(f" --set {a}" for a in args.set)
    tag = f" --tag {args.tag} --work WORK" if args.tag else ""
    only = "" if args.protocols == "reid,catalogue" else f" --protocols {args.protocols}"
    command = f"python benchmarks/encounters.py --dataset {args.dataset} --image-size {args.image_size}{only}"
    command += f"{sets}{tag}"
    lines += ["", f"Reproduce: `{command}`"]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
