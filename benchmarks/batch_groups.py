"""Issue 23 benchmark: protocol B queries answered as a batch by `query --batch --group`'s code.

Where no encounter is recorded (lions), a batch of queries may still hold several photos of one
animal. The product's batch grouping (kenning/batch_grouping.py, decision/grouping.py) links each
query to its best local match among the other queries of its side and answers linked photos
together, never joining two photos that each name a different identity on their own. It is
calibrated as `build-index --set index.grouping=true` calibrates it (grouping_calibration.py): on
the held-out identities only, the photo threshold, then per link setting (a quantile of the
held-out links) the grouped answers' unknown threshold (balanced objective); the setting the
held-out side scores best is the index's. Every setting is then applied to the evaluation split.
Reported per link setting: groups, their purity (share holding one identity), each side's
false-accept rate, the test balanced score and its test oracle (open_set.py).

Caveat: photos linked this way may share the photograph or the scene rather than the animal's
marks (the lions crops of one lion come partly from one photograph), so a gain here is batch
context, not recognition of the instance.

    python benchmarks/batch_groups.py --dataset lions --image-size 128 --set local.image_side=256 \\
        --set local.foreground=0.0 --set local.k=3 --set local.spatial=30 --tag sp30 --work WORK

Writes benchmarks/results/batch_groups_<dataset>[_<tag>].{json,md}.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from common import RESULTS
from local_matching import reproduce, setup
from open_set import catalogues, figures, matched, oracle_balanced

from kenning.batch_grouping import batch_links
from kenning.decision.grouping import grouped, link_groups, sure_labels
from kenning.decision.rules import Fused
from kenning.decision.threshold import calibrate_threshold
from kenning.grouping_calibration import candidates


def purity(group: np.ndarray, identities: list[str]) -> float:
    table = pd.DataFrame({"group": group, "identity": identities})
    return float((table.groupby("group")["identity"].nunique() == 1).mean())


def main() -> None:
    args, cfg, work, model, images = setup(__doc__.splitlines()[0])
    sides_of = catalogues(args, cfg, work, model, images)
    sides = {side: matched(*parts) for side, parts in sides_of.items()}
    links = {side: batch_links(sides_of[side][0], data["probes"], data["views"]) for side, data in sides.items()}
    recognizer = sides_of["test"][0]
    unknown, rule = recognizer.unknown_label, Fused(recognizer.fused.fusion)
    photo = {side: rule.rank(data["matches"].neighbours, data["matches"].candidates) for side, data in sides.items()}
    held = sides["held-out"]
    photo_threshold = calibrate_threshold(
        photo["held-out"], held["actual"], unknown, "balanced", identities=held["identities"]
    ).threshold  # the photo threshold build-index calibrates first: what a photo is sure at
    settings = candidates(
        links["held-out"],
        held["views"],
        photo["held-out"],
        held["actual"],
        held["identities"],
        photo_threshold,
        unknown,
    )
    chosen_grouping = max(settings, key=lambda s: s[0])[1]  # what calibrate_grouping stores
    rows = []
    for _, grouping in settings:
        row: dict = {"link quantile": grouping.quantile, "link score": grouping.link}
        answers = {}
        for side, data in sides.items():
            sure = sure_labels(photo[side], photo_threshold)
            group = link_groups(*links[side], grouping.link, sure)
            answers[side] = (grouped(photo[side], data["views"], group), data["actual"], data["identities"])
            row.update({f"{side} groups": len(set(group)), f"{side} purity": purity(group, data["identities"])})
        calibration = calibrate_threshold(*answers["held-out"][:2], unknown, "balanced", identities=held["identities"])
        assert abs(calibration.threshold - grouping.threshold) < 1e-12  # the product's own calibration
        for side, parts in answers.items():
            row.update({f"{side} {k}": v for k, v in figures(*parts, calibration, unknown).items()})
        row["test oracle balanced"] = oracle_balanced(*answers["test"], unknown)
        row["chosen"] = grouping is chosen_grouping
        rows.append(row)
        print(json.dumps(row), flush=True)
    chosen = next(r for r in rows if r["chosen"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"batch_groups_{args.dataset}{'_' + args.tag if args.tag else ''}"
    summary = {"dataset": args.dataset, "photo threshold": photo_threshold, "rows": rows}
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    shown = [
        "held-out groups",
        "held-out purity",
        "test groups",
        "test purity",
        "held-out balanced",
        "held-out far",
        "test far",
        "test balanced",
        "test oracle balanced",
        "test baks",
        "test baus",
        "test closed_recall@1",
    ]
    lines = [
        f"# Protocol B on {args.dataset}: queries grouped by matching each other, each group answered once",
        "",
        "| link quantile | " + " | ".join(shown) + " |",
        "|---|" + "---|" * len(shown),
    ]
    for r in rows:
        name = "none (photo by photo)" if r["link score"] is None else f"{r['link quantile']:.1f}"
        name += " (chosen on held-out)" if r is chosen else ""
        cells = ["-" if r.get(k) is None else f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in shown]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", f"Reproduce: `{reproduce('batch_groups.py', args)}`"]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
