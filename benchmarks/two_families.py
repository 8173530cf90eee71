"""Issue 24 benchmark: do two local-feature families err on different queries? LNBNN alone, protocol A.

Each family's features of a nyala split are extracted once (kept under WORK, resumable); every photo
then queries the rest of the split with its own sighting excluded, by LNBNN over each family's
descriptors. Reported, Recall@1 of the identity each ranks first: each family alone, their sum with
each family's scores divided by its best score for that query (no calibration, nothing fitted),
their raw sum, the `sift+disk` family (kenning/local/joined.py: one LNBNN over both families'
descriptors, each in its own half of one vector, an identity scoring the sum of its best image's
score in each family: their raw sum, computed as an index of that family computes it), and
the share of queries that at least one family answers right (the most any combination could reach).
No embedding, no fusion: this asks whether a second family is worth storing, before building it.

    python benchmarks/two_families.py --work WORK --split eval --families sift,disk

Writes benchmarks/results/two_families_<split>_<a>_<b>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, SHARED
from tqdm import tqdm

from kenning.config import LocalConfig
from kenning.data.readers import read_dataset, select_split
from kenning.data.splits import sighting_key
from kenning.local.extractor import create_extractor
from kenning.local.features import extract_paths
from kenning.local.featureset import FeatureSet, Layout
from kenning.local.joined import JoinedMatcher, joined
from kenning.local.lnbnn import LnbnnMatcher

SETTINGS = {
    "sift": {},
    "aliked": {"max_keypoints": 512},
    "disk": {"max_keypoints": 512},
    "xfeat": {"max_keypoints": 512},
}


def features(work: Path, split: str, family: str, paths: list[str], extra: dict | None = None) -> list:
    """The split's features of one family, extracted once (what local_matching.py's index holds);
    `extra` overrides extraction settings (LocalConfig keys) and gets a cache of its own."""
    extra = extra or {}
    suffix = "".join(f"-{k}={v}" for k, v in sorted(extra.items()))
    cache = work / "nyala" / f"features-{split}-{family}{suffix}.pkl"
    if cache.is_file():
        return pickle.loads(cache.read_bytes())
    cfg = LocalConfig(method=family, **{**SETTINGS[family], **extra})
    found = extract_paths(paths, cfg, progress=True).features
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(found))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-local")
    parser.add_argument("--split", default="eval", choices=["eval", "train"])
    parser.add_argument("--families", default="sift,disk")
    args = parser.parse_args()
    families = args.families.split(",")
    table = select_split(read_dataset(SHARED / "nyala"), args.split).reset_index(drop=True)
    found = {f: features(args.work, args.split, f, table["path"].tolist()) for f in families}
    ok = np.array([all(found[f][i] is not None for f in families) for i in range(len(table))])
    table = table[ok].reset_index(drop=True)
    found = {f: [x for x, k in zip(v, ok, strict=True) if k] for f, v in found.items()}
    labels = table["label"].to_numpy().astype(str)
    rows = np.arange(len(table))
    matchers = {
        f: LnbnnMatcher(FeatureSet.of(rows, found[f], create_extractor(f).layout), labels, k=5) for f in families
    }
    layout = Layout(sum(create_extractor(f).layout.dim for f in families), "float16")
    found["joined"] = [joined([found[f][i] for f in families], layout) for i in rows]
    matchers["joined"] = JoinedMatcher(FeatureSet.of(rows, found["joined"], layout), labels, k=5)
    keys = np.array([f"{label}\x00{sighting_key(i)}" for label, i in zip(labels, table["image_id"], strict=True)])
    names = np.unique(labels)
    sums = ("sum of max-normalised scores", "sum of raw scores")
    hits = {**{f: 0 for f in families}, **dict.fromkeys(sums, 0), "joined family (one index)": 0, "either right": 0}
    queries, started = 0, time.perf_counter()
    for q in tqdm(rows, desc="queries", unit="query"):
        own = rows[keys == keys[q]]
        if not np.any(np.delete(labels, own) == labels[q]):
            continue  # no other sighting of its identity: protocol A leaves it out
        queries += 1
        scores = {}
        for f in [*families, "joined"]:
            found_q = matchers[f].score(found[f][q], exclude=own)
            scores[f] = np.zeros(len(names))
            scores[f][np.searchsorted(names, found_q.labels)] = found_q.label_scores
        right = {f: names[np.argmax(s)] == labels[q] if s.any() else False for f, s in scores.items()}
        for f in families:
            hits[f] += right[f]
        hits["joined family (one index)"] += right["joined"]
        alone = [scores[f] for f in families]
        for name, total in zip(sums, (sum(s / s.max() for s in alone if s.any()), sum(alone)), strict=True):
            hits[name] += bool(np.any(total)) and names[np.argmax(total)] == labels[q]
        hits["either right"] += any(right[f] for f in families)
    result = {
        "split": args.split,
        "families": families,
        "settings": {f: SETTINGS[f] for f in families},
        "queries": queries,
        "seconds": round(time.perf_counter() - started),
        "recall@1": {k: round(v / queries, 3) for k, v in hits.items()},
    }
    stem = f"two_families_{args.split}_{'_'.join(families)}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# LNBNN of {' and '.join(families)} on nyala {args.split}, protocol A ({queries} queries)",
        "",
        "| ranking (LNBNN only, no embedding) | Recall@1 |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in result["recall@1"].items()),
        "",
        f"Reproduce: `python benchmarks/two_families.py --work WORK --split {args.split} --families {args.families}`",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
