"""Issue 24's table: each local-feature family beside the embedding, per dataset and protocol,
from the results local_matching.py wrote (one run per family and setting, `--tag`).

    python benchmarks/local_matching.py --dataset nyala --set local.method=aliked --set local.max_keypoints=512 \\
        --set local.glue=3 --tag aliked_glue3
    python benchmarks/learned_local_table.py --dataset nyala --tags ,aliked_glue3

Writes benchmarks/results/learned_local_<dataset>.md (the empty tag is the SIFT run without one).
"""

from __future__ import annotations

import argparse
import json

from common import RESULTS

FIGURES = ["recall@1", "recall@5", "map@5", "known_accuracy", "unknown_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="nyala", choices=["nyala", "lions"])
    parser.add_argument("--tags", default=",aliked_glue3", help="local_matching.py tags, comma-separated")
    args = parser.parse_args()
    lines = [
        f"# Local-feature families on {args.dataset} (protocols A = reid, B = catalogue)",
        "",
        "| protocol | family | keypoints | glue | system | " + " | ".join(FIGURES) + " | build + eval s |",
        "|---|---|---|---|---|" + "---|" * (len(FIGURES) + 1),
    ]
    for tag in args.tags.split(","):
        stem = f"local_matching_{args.dataset}{'_' + tag if tag else ''}"
        run = json.loads((RESULTS / f"{stem}.json").read_text())
        local = run["config"]["local"]
        for r in run["rows"]:
            cells = ["-" if r.get(k) is None else f"{r[k]:.3f}" for k in FIGURES]
            lines.append(
                f"| {r['protocol']} | {local['method']} | {local['max_keypoints']} | {local.get('glue', 0)} | "
                f"{r['system']} | {' | '.join(cells)} | {r.get('seconds') or '-'} |"
            )
    lines += ["", f"From `benchmarks/results/local_matching_{args.dataset}*.json`; each run's command is in its .md."]
    (RESULTS / f"learned_local_{args.dataset}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
