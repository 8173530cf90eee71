"""Issue 24 benchmark: LNBNN re-scored from its spatially consistent votes (`local.spatial`) and
identities scored by HotSpotter's name scoring (`local.identity_score nsum`), protocol A.

HotSpotter's spatial verification: the N gallery images LNBNN scores highest for a query keep only
the votes one similarity transform of the query onto that image explains, and every other image
is dropped (kenning/local/lnbnn.py); name scoring: an identity sums each query descriptor's best
vote among its images instead of scoring as its best image. Each photo queries the rest of the
split with its own sighting excluded, LNBNN alone (no embedding, no fusion). The features are
either a family's of a nyala split, extracted once (two_families.py's cache under WORK), or, with
`--index DIR`, those a built index holds (any family; protocol A's index is the whole split, so
nothing is extracted again), then with `--viewpoints compatible` a flank against that flank only.
Reported per family, N (0: off) and identity score: Recall@1 and Recall@5 of the identities
ranked, and the time per query. Choose on `--split train`; the eval split only reports.

    python benchmarks/spatial_rescoring.py --work WORK --split train --families sift --spatial 0,10,30
    python benchmarks/spatial_rescoring.py --index WORK/nyala/reid-views-index-sift_disk_sp30 \
        --spatial 30 --identity-score best_image,nsum --viewpoints compatible

Writes benchmarks/results/spatial_rescoring_<split>_<families>[_<tag>].{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from itertools import product
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, SHARED
from tqdm import tqdm
from two_families import features

from kenning.config import LocalConfig
from kenning.data.readers import read_dataset, select_split
from kenning.data.splits import sighting_key
from kenning.index.gallery import GalleryIndex
from kenning.local.extractor import create_extractor, matcher_class
from kenning.local.featureset import FeatureSet, Layout
from kenning.local.joined import EXTRACTOR as JOINED
from kenning.local.joined import JoinedMatcher, joined
from kenning.local.lnbnn import LnbnnMatcher


def family_features(work: Path, split: str, family: str, paths: list[str], extra: dict) -> tuple[list, Layout, type]:
    """A family's features of the split, its layout and matcher; sift+disk joins the two caches."""
    if family != JOINED.name:
        return features(work, split, family, paths, extra), create_extractor(family).layout, LnbnnMatcher
    parts = [features(work, split, f, paths, extra) for f in JOINED.families]
    found = [
        None if any(p[i] is None for p in parts) else joined([p[i] for p in parts], JOINED.layout)
        for i in range(len(paths))
    ]
    return found, JOINED.layout, JoinedMatcher


def split_set(args: argparse.Namespace, family: str) -> tuple[FeatureSet, np.ndarray, np.ndarray, type]:
    """(gallery features, image ids, viewpoints, matcher class) of the split's cached features."""
    table = select_split(read_dataset(SHARED / "nyala"), args.split).reset_index(drop=True)
    found, layout, matcher = family_features(args.work, args.split, family, table["path"].tolist(), extraction(args))
    rows = np.flatnonzero([f is not None for f in found])
    table = table.iloc[rows].reset_index(drop=True)
    views = table["viewpoint"] if "viewpoint" in table else np.full(len(table), "")
    gallery = FeatureSet.of(np.arange(len(rows)), [found[i] for i in rows], layout)
    return gallery, table, np.asarray(views, dtype=str), matcher


def index_set(directory: Path) -> tuple[FeatureSet, object, np.ndarray, type, str]:
    """(gallery features, table, viewpoints, matcher class, family) of a built index's base."""
    index = GalleryIndex.load(directory)
    manifest, gallery = index.manifest, index.base_local  # memory-mapped as loaded, not read again
    table = index.base_table.set_index("id").loc[gallery.ids].reset_index()
    views = table["viewpoint"].fillna("").to_numpy().astype(str)
    return gallery, table, views, matcher_class(manifest.extractor.matcher), manifest.require_local().method


def extraction(args: argparse.Namespace) -> dict:
    """`--extract key=value` pairs as LocalConfig extraction settings, typed as the config types them."""
    fields = {f.name: f.type for f in dataclasses.fields(LocalConfig)}
    pairs = [e.split("=", 1) for e in args.extract]
    cast = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}
    return {k: cast.get(str(fields[k]), str)(v) for k, v in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-local")
    parser.add_argument("--split", default="train", choices=["eval", "train"])
    parser.add_argument("--families", default="sift")
    parser.add_argument("--index", type=Path, help="a built protocol A index: its features, its family")
    parser.add_argument("--spatial", default="0,10,30", help="images re-scored per query, comma-separated")
    parser.add_argument("--identity-score", default="best_image", help="best_image and/or nsum, comma-separated")
    parser.add_argument("--tolerance", default="12", help="RANSAC tolerances, px per 512 px side, comma-separated")
    parser.add_argument("--viewpoints", default="any", choices=["any", "compatible"])
    parser.add_argument("--extract", action="append", default=[], help="key=value: a LocalConfig extraction setting")
    parser.add_argument("--whiten", action="store_true", help="LNBNN over PCA-whitened descriptors (local.whiten)")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    rows = []
    families = [None] if args.index else args.families.split(",")
    for family in families:
        if args.index:
            gallery, table, views, matcher_of, family = index_set(args.index)
            args.split = "eval"
        else:
            gallery, table, views, matcher_of = split_set(args, family)
        labels = table["label"].to_numpy().astype(str)
        keys = np.array([f"{lab}\x00{sighting_key(i)}" for lab, i in zip(labels, table["image_id"], strict=True)])
        tolerances = [float(t) for t in args.tolerance.split(",")]
        for spatial in (int(n) for n in args.spatial.split(",")):
            for identity_score, tolerance in product(args.identity_score.split(","), tolerances):
                if tolerance != tolerances[0] and not spatial:
                    continue  # no re-scoring: the tolerance changes nothing
                kwargs = {"spatial": spatial, "identity_score": identity_score, "tolerance": tolerance}
                kwargs["whiten"] = args.whiten
                matcher = matcher_of(gallery, labels, k=5, **kwargs)
                top1 = top5 = queries = 0
                started = time.perf_counter()
                setting = f"{family} {spatial} {identity_score} {tolerance}"
                for q in tqdm(range(len(gallery)), desc=setting, unit="query"):
                    own = keys == keys[q]
                    if args.viewpoints == "compatible" and views[q]:
                        own |= (views != views[q]) & (views != "")
                    if not np.any(labels[~own] == labels[q]):
                        continue  # no other (compatible) sighting of its identity: protocol A leaves it out
                    queries += 1
                    ranked = matcher.score(gallery.image(q), exclude=gallery.ids[own]).labels
                    top1 += bool(ranked) and ranked[0] == labels[q]
                    top5 += labels[q] in ranked[:5]
                seconds = time.perf_counter() - started
                rows.append(
                    {
                        "family": family
                        + "".join(f" {e}" for e in args.extract)
                        + (" whitened" if args.whiten else ""),
                        "spatial": spatial,
                        "identity_score": identity_score,
                        "tolerance": tolerance,
                        "viewpoints": args.viewpoints,
                        "queries": queries,
                        "recall@1": round(top1 / queries, 3),
                        "recall@5": round(top5 / queries, 3),
                        "ms_per_query": round(1000 * seconds / queries, 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    names = "_".join(f for f in families if f) if not args.index else family
    stem = f"spatial_rescoring_{args.split}_{names.replace('+', '_')}{'_' + args.tag if args.tag else ''}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    source = str(args.index) if args.index else f"cache of {args.work}"
    (RESULTS / f"{stem}.json").write_text(json.dumps({"split": args.split, "source": source, "rows": rows}, indent=2))
    reproduce = " ".join(
        ["python benchmarks/spatial_rescoring.py"]
        + (
            [f"--index WORK/nyala/{args.index.name}"]
            if args.index
            else ["--work WORK", f"--split {args.split}", f"--families {args.families}"]
        )
        + [f"--spatial {args.spatial}", f"--identity-score {args.identity_score}", f"--viewpoints {args.viewpoints}"]
        + ([f"--tolerance {args.tolerance}"] if args.tolerance != "12" else [])
        + [f"--extract {e}" for e in args.extract]
        + (["--whiten"] if args.whiten else [])
        + ([f"--tag {args.tag}"] if args.tag else [])
    )
    lines = [
        f"# LNBNN re-scored from spatially consistent votes, nyala {args.split}, protocol A (LNBNN alone)",
        "",
        "| family | images re-scored | tolerance (px / 512) | identity score | viewpoints | queries | Recall@1 "
        "| Recall@5 | ms / query |",
        "|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['family']} | {r['spatial'] or 'off'} | {r['tolerance'] if r['spatial'] else '-'} "
            f"| {r['identity_score']} | {r['viewpoints']} | {r['queries']} "
            f"| {r['recall@1']} | {r['recall@5']} | {r['ms_per_query']} |"
            for r in rows
        ),
        "",
        f"Reproduce: `{reproduce}`",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
