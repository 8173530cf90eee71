"""Issue 23 benchmark: protocol B answered end to end by the product, photo by photo and by
`query --batch --group`.

The catalogue index is built by `build-index`'s code with `--set index.grouping=true` (and the
balanced objective): fusion, photo threshold and batch grouping calibrated on the held-out
identities only and stored in the manifest. The evaluation split's queries are then one batch,
answered with the stored rules by the functions `query --batch` calls (Recognizer.query;
batch_grouping.answer_grouped for --group), and scored against their truths. The held-out false-accept
rates are the ones calibration stored; the test ones come from these answers.

Caveat (as batch_groups.py): photos of one batch that match each other may share a photograph or a
scene rather than the animal's marks, so a gain from --group is batch context, not recognition.

    python benchmarks/grouped_batch.py --dataset lions --image-size 128 --set local.image_side=256 \\
        --set local.foreground=0.0 --set local.k=3 --set local.spatial=30 --tag sp30 --work WORK

Builds WORK/<dataset>/grouped-index[-<tag>] once (kept: a second run scores it again); writes
benchmarks/results/grouped_batch_<dataset>[_<tag>].{json,md}.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
from common import RESULTS
from local_matching import reproduce, setup
from open_set import far_interval

from kenning.batch_grouping import answer_grouped
from kenning.data.metadata import VIEWPOINT, with_metadata
from kenning.data.splits import catalogue_split
from kenning.decision.grouping import Grouping
from kenning.eval.protocols import run_protocol
from kenning.metrics.answers import answer_metrics
from kenning.recognizer import Recognizer

SHOWN = ["held-out far", "test far", "test far 5%", "test far 95%", "test balanced", "test balanced 5%",
         "test balanced 95%", "test baks", "test baus"]  # fmt: skip
DRAWS = 1000


def balanced_interval(right: np.ndarray, known: np.ndarray, identities: list[str], seed: int = 0) -> tuple:
    """5% and 95% points of the balanced score over bootstrap draws of the identities (known and new
    ones drawn apart, as BAKS and BAUS average per identity): how far one split's figure is from noise."""
    table = pd.DataFrame({"right": right, "known": known, "identity": identities})
    per = table.groupby(["known", "identity"])["right"].mean()
    rng = np.random.default_rng(seed)
    known_acc, new_acc = per.loc[True].to_numpy(), per.loc[False].to_numpy()
    baks = known_acc[rng.integers(0, len(known_acc), (DRAWS, len(known_acc)))].mean(1)
    baus = new_acc[rng.integers(0, len(new_acc), (DRAWS, len(new_acc)))].mean(1)
    return tuple(float(q) for q in np.quantile(np.sqrt(baks * baus), [0.05, 0.95]))


def scored(answers: list, actual: list[str], identities: list[str], unknown: str, threshold: float) -> dict:
    """The figures of one way of answering the test queries (unreadable ones count as wrong)."""
    truth = np.array(actual, dtype=object)
    known = truth != unknown
    ids = [f"{i:06d}" for i in range(len(truth))]
    m = answer_metrics(truth, known, answers, ids, unknown, threshold, identities)
    accepted = np.array([a.labels[0] != unknown for a, k in zip(answers, known, strict=True) if not k])
    low, high = far_interval(accepted, [i for i, k in zip(identities, known, strict=True) if not k])
    top = np.array([a.labels[0] for a in answers], dtype=object)
    b_low, b_high = balanced_interval(np.where(known, top == truth, top == unknown), known, identities)
    return {"test far": m["false_accept_rate"], "test far 5%": low, "test far 95%": high,
            "test balanced": m["balanced"], "test balanced 5%": b_low, "test balanced 95%": b_high,
            "test baks": m["baks"], "test baus": m["baus"]}  # fmt: skip


def main() -> None:
    args, cfg, work, model, images = setup(__doc__.splitlines()[0])
    index_cfg = dataclasses.replace(cfg.index, grouping=True, calibrate="balanced")
    index_dir = work / f"grouped-index{'-' + args.tag if args.tag else ''}"
    if not (index_dir / "manifest.json").is_file():
        run_protocol("catalogue", model, images, index_cfg, index_dir, progress=True, local=cfg.local)
    recognizer = Recognizer.open(index_dir, progress=True)
    manifest = recognizer.index.manifest
    grouping = Grouping.from_dict(manifest.grouping)
    gallery, queries = catalogue_split(images)
    queries = with_metadata(queries)
    paths, views = queries["path"].tolist(), queries[VIEWPOINT].tolist()
    unknown, known = recognizer.unknown_label, set(gallery["label"])
    actual = [lab if lab in known else unknown for lab in queries["label"]]
    identities = queries["label"].tolist()
    photo = recognizer.query(paths, views)
    grouped, groups = answer_grouped(recognizer, paths, views)
    assert all(not isinstance(a, str) for a in photo + grouped), "an evaluation image could not be read"
    rows = [
        {"answer": "photo by photo (query --batch)", "held-out far": manifest.fusion["calibration"]["far"],
         **scored(photo, actual, identities, unknown, recognizer.threshold)},
        {"answer": "grouped (query --batch --group)", "held-out far": grouping.held_out["far"],
         "groups": len(set(groups.tolist())), **scored(grouped, actual, identities, unknown, grouping.threshold)},
    ]  # fmt: skip
    for row in rows:
        print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"grouped_batch_{args.dataset}{'_' + args.tag if args.tag else ''}"
    summary = {"dataset": args.dataset, "queries": len(paths), "grouping": grouping.to_dict(), "rows": rows}
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    link = "none" if grouping.link is None else f"{grouping.link:.4f} (quantile {grouping.quantile})"
    lines = [
        f"# Protocol B on {args.dataset}, end to end: the stored rules answer the test split's {len(paths)} queries",
        "",
        f"Grouping chosen on the held-out identities: link {link}, grouped threshold {grouping.threshold:.4f}; "
        f"{len(set(groups.tolist()))} groups on test.",
        "",
        "| answer | " + " | ".join(SHOWN) + " |",
        "|---|" + "---|" * len(SHOWN),
    ]
    lines += [f"| {r['answer']} | " + " | ".join(f"{r[k]:.3f}" for k in SHOWN) + " |" for r in rows]
    lines += ["", f"Reproduce: `{reproduce('grouped_batch.py', args)}`"]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
