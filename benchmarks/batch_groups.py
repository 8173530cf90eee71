"""Issue 23 benchmark: protocol B queries answered as a batch, photos that match each other grouped.

Where no encounter is recorded (lions), a batch of queries may still hold several photos of one
animal. Here each query's best local match among the *other queries* of its side is a link when
its score reaches a threshold; linked photos form a group (connected components) and every photo
of a group gets the group's answer (decision/encounters.combine over its photos' fused rankings,
as an encounter is answered). The link threshold is a quantile of the held-out queries' best
query-to-query scores; it and the unknown threshold (balanced objective, raw fused scores: the
default rule) are chosen on the held-out identities only, then applied to the evaluation split.
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
from local_matching import setup
from open_set import catalogues, figures, matched, oracle_balanced
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from kenning.build import _metadata
from kenning.decision.encounters import combine
from kenning.decision.rules import Fused
from kenning.decision.threshold import calibrate_threshold
from kenning.decision.voting import RankedLabels
from kenning.recognizer import GLOBAL_CANDIDATES, Recognizer

QUANTILES = (None, 0.9, 0.7, 0.5, 0.3)  # link threshold: quantile of held-out best scores; None links nothing


def best_links(recognizer: Recognizer, queries: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best local match among the other queries (its position) and that score: the
    queries enrolled into an in-memory copy of the catalogue, each its own identity."""
    probes = recognizer.read(queries["path"].tolist())
    queries = queries[probes.ok]
    names = [f"batch-query-{i}" for i in range(len(queries))]
    batch = recognizer.with_index(
        recognizer.index.with_enrolled(probes.vectors, names, names, probes.local, _metadata(queries))
    )
    ids = batch.index.ids_of_images(names)
    views = _metadata(queries)["viewpoint"]
    found = batch.match(probes.vectors, probes.local, width=GLOBAL_CANDIDATES, exclude=ids[:, None], views=views)
    position = {int(g): n for n, g in enumerate(ids)}
    partner, score = np.arange(len(ids)), np.zeros(len(ids))
    for i, local in enumerate(found.local):
        for image, value in zip(local.image_ids, local.image_scores, strict=True):
            if int(image) in position:  # best first: the first query among them
                partner[i], score[i] = position[int(image)], float(value)
                break
    return partner, score


def grouped(ranked: list[RankedLabels], views: list[str], partner: np.ndarray, links: np.ndarray) -> tuple:
    """Every photo's answer as its group's (photos joined by the links kept), and each photo's group."""
    n = len(ranked)
    graph = coo_matrix((np.ones(int(links.sum())), (np.flatnonzero(links), partner[links])), shape=(n, n))
    _, group = connected_components(graph, directed=True, connection="weak")
    members = pd.Series(np.arange(n)).groupby(group).agg(list)
    answer = {g: combine([ranked[i] for i in rows], [views[i] for i in rows]) for g, rows in members.items()}
    return [answer[g] for g in group], group


def purity(group: np.ndarray, identities: list[str]) -> float:
    table = pd.DataFrame({"group": group, "identity": identities})
    return float((table.groupby("group")["identity"].nunique() == 1).mean())


def main() -> None:
    args, cfg, work, model, images = setup(__doc__.splitlines()[0])
    sides_of = catalogues(args, cfg, work, model, images)
    sides = {side: matched(*parts) for side, parts in sides_of.items()}
    links = {side: best_links(rec, queries) for side, (rec, queries, _) in sides_of.items()}
    recognizer = sides_of["test"][0]
    unknown, rule = recognizer.unknown_label, Fused(recognizer.fused.fusion)
    photo = {side: rule.rank(data["matches"].neighbours, data["matches"].candidates) for side, data in sides.items()}
    rows = []
    for quantile in QUANTILES:
        cut = np.inf if quantile is None else float(np.quantile(links["held-out"][1], quantile))
        row: dict = {"link quantile": quantile, "link score": None if quantile is None else cut}
        answers = {}
        for side, data in sides.items():
            partner, score = links[side]
            ranked, group = grouped(photo[side], data["views"], partner, score >= cut)
            answers[side] = (ranked, data["actual"], data["identities"])
            row.update({f"{side} groups": len(set(group)), f"{side} purity": purity(group, data["identities"])})
        calibration = calibrate_threshold(
            *answers["held-out"][:2], unknown, "balanced", identities=answers["held-out"][2]
        )
        for side, parts in answers.items():
            row.update({f"{side} {k}": v for k, v in figures(*parts, calibration, unknown).items()})
        row["test oracle balanced"] = oracle_balanced(*answers["test"], unknown)
        rows.append(row)
        print(json.dumps(row), flush=True)
    chosen = max(rows, key=lambda r: r["held-out balanced"])  # the link setting the held-out side picks
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"batch_groups_{args.dataset}{'_' + args.tag if args.tag else ''}"
    (RESULTS / f"{stem}.json").write_text(json.dumps({"dataset": args.dataset, "rows": rows}, indent=2))
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
        name = "none (photo by photo)" if r["link quantile"] is None else f"{r['link quantile']:.1f}"
        name += " (chosen on held-out)" if r is chosen else ""
        cells = ["-" if r.get(k) is None else f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in shown]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    sets = "".join(f" --set {a}" for a in args.set)
    command = f"python benchmarks/batch_groups.py --dataset {args.dataset} --image-size {args.image_size}{sets}"
    command += f" --tag {args.tag} --work WORK" if args.tag else ""
    lines += ["", f"Reproduce: `{command}`"]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
