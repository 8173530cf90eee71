"""Issue 24 benchmark: LNBNN re-scored from its spatially consistent votes (`local.spatial`), protocol A.

HotSpotter's spatial verification: the N gallery images LNBNN scores highest for a query keep only
the votes one similarity transform of the query onto that image explains, and every other image
is dropped (kenning/local/lnbnn.py). Each family's features of a nyala split are extracted once
(two_families.py's cache under WORK); every photo queries the rest of the split with its own
sighting excluded, LNBNN alone (no embedding, no fusion). Reported per family and N (0: today's
LNBNN): Recall@1 and Recall@5 of the identities ranked, and the time per query. Choose N on
`--split train`; the eval split only reports.

    python benchmarks/spatial_rescoring.py --work WORK --split train --families sift --spatial 0,10,30

Writes benchmarks/results/spatial_rescoring_<split>_<families>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, SHARED
from tqdm import tqdm
from two_families import features

from kenning.data.readers import read_dataset, select_split
from kenning.data.splits import sighting_key
from kenning.local.extractor import create_extractor
from kenning.local.featureset import FeatureSet, Layout
from kenning.local.joined import EXTRACTOR as JOINED
from kenning.local.joined import JoinedMatcher, joined
from kenning.local.lnbnn import LnbnnMatcher


def family_features(work: Path, split: str, family: str, paths: list[str]) -> tuple[list, Layout, type]:
    """A family's features of the split, its layout and matcher; sift+disk joins the two caches."""
    if family != JOINED.name:
        return features(work, split, family, paths), create_extractor(family).layout, LnbnnMatcher
    parts = [features(work, split, f, paths) for f in JOINED.families]
    found = [
        None if any(p[i] is None for p in parts) else joined([p[i] for p in parts], JOINED.layout)
        for i in range(len(paths))
    ]
    return found, JOINED.layout, JoinedMatcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-local")
    parser.add_argument("--split", default="train", choices=["eval", "train"])
    parser.add_argument("--families", default="sift")
    parser.add_argument("--spatial", default="0,10,30", help="images re-scored per query, comma-separated")
    args = parser.parse_args()
    table = select_split(read_dataset(SHARED / "nyala"), args.split).reset_index(drop=True)
    keys = np.array([f"{lab}\x00{sighting_key(i)}" for lab, i in zip(table["label"], table["image_id"], strict=True)])
    labels = table["label"].to_numpy().astype(str)
    rows = []
    for family in args.families.split(","):
        found, layout, matcher_of = family_features(args.work, args.split, family, table["path"].tolist())
        ok = np.array([f is not None for f in found])
        ids = np.flatnonzero(ok)
        gallery = FeatureSet.of(ids, [found[i] for i in ids], layout)
        for spatial in (int(n) for n in args.spatial.split(",")):
            matcher = matcher_of(gallery, labels[ids], k=5, spatial=spatial)
            top1 = top5 = queries = 0
            started = time.perf_counter()
            for q in tqdm(ids, desc=f"{family} spatial={spatial}", unit="query"):
                own = np.flatnonzero(keys == keys[q])
                if not np.any(np.delete(labels, own) == labels[q]):
                    continue  # no other sighting of its identity: protocol A leaves it out
                queries += 1
                ranked = matcher.score(found[q], exclude=own).labels
                top1 += bool(ranked) and ranked[0] == labels[q]
                top5 += labels[q] in ranked[:5]
            seconds = time.perf_counter() - started
            rows.append(
                {
                    "family": family,
                    "spatial": spatial,
                    "queries": queries,
                    "recall@1": round(top1 / queries, 3),
                    "recall@5": round(top5 / queries, 3),
                    "ms_per_query": round(1000 * seconds / queries, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    stem = f"spatial_rescoring_{args.split}_{args.families.replace(',', '_').replace('+', '_')}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"split": args.split, "rows": rows}, indent=2))
    lines = [
        f"# LNBNN re-scored from spatially consistent votes, nyala {args.split}, protocol A (LNBNN alone)",
        "",
        "| family | images re-scored | queries | Recall@1 | Recall@5 | ms / query |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['family']} | {r['spatial'] or 'off'} | {r['queries']} | {r['recall@1']} | {r['recall@5']} "
            f"| {r['ms_per_query']} |"
            for r in rows
        ),
        "",
        f"Reproduce: `python benchmarks/spatial_rescoring.py --work WORK --split {args.split} "
        f"--families {args.families} --spatial {args.spatial}`",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
