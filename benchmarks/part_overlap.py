"""What protocol B asks of a matcher: how many known queries show the part of the animal that their
identity's enrolled photos show, and which parts were enrolled for the rest.

A photo shows one part or side of an animal (lions: face, ear, nose, whiskers, body ...; nyala: the
left or right flank), written in the shared sets' file names as the stem after its first "_"
(`Amber_Left_ear.jpg`: left_ear; `12_leftphoto.jpg`: leftphoto). A query of another part than its
enrolled photos can only be matched through a region both happen to show (an ear inside a face
crop, at another scale; a head a few pixels wide inside a body crop) or through what is not the
animal's marks (coat colour, the scene), so these counts say how much of protocol B is recognition
of the same view and how much is cross-part matching.

    python benchmarks/part_overlap.py --dataset lions
    python benchmarks/part_overlap.py --dataset lions --index WORK/lions/catalogue-index-TAG

With `--index` (a protocol B index open_set.py or local_matching.py built), also how often the fused
rule's first identity is right (no threshold), per enrolled part, beside what chance would give.

Writes benchmarks/results/part_overlap_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path, PurePosixPath

import pandas as pd
from common import RESULTS, SHARED
from open_set import answered, matched

from kenning.data.readers import read_dataset, select_split
from kenning.data.splits import catalogue_split
from kenning.decision.rules import Fused
from kenning.recognizer import Recognizer


def part(image_id: str) -> str:
    """The part a shared-set file name states: its stem after the first "_", lower-cased ("" without one)."""
    stem = PurePosixPath(str(image_id).replace("\\", "/")).stem
    return stem.split("_", 1)[1].lower() if "_" in stem else ""


def overlap(table: pd.DataFrame) -> dict:
    """Protocol B's known queries, and how many of them show a part an enrolled photo of theirs shows."""
    enrolled, queries = catalogue_split(table)
    shown = enrolled.groupby("label")["image_id"].agg(lambda ids: {part(i) for i in ids}).to_dict()
    known = queries[queries["label"].isin(set(shown))]
    shared = [part(i) in shown[lab] for i, lab in zip(known["image_id"], known["label"], strict=True)]
    return {
        "identities_enrolled": len(shown),
        "known_queries": len(known),
        "with_an_enrolled_part": int(sum(shared)),
        "enrolled_parts": enrolled["image_id"].map(part).value_counts().to_dict(),
        "query_parts": known["image_id"].map(part).value_counts().to_dict(),
        "queries_by_enrolled_part": known["label"]
        .map(lambda lab: "+".join(sorted(shown[lab])))
        .value_counts()
        .to_dict(),
    }


def first_right(index: Path, table: pd.DataFrame) -> dict[str, str]:
    """Per enrolled part: known queries whose fused first identity is right, of how many, and chance's count."""
    recognizer = Recognizer.open(index, progress=False)
    enrolled, queries = catalogue_split(table)
    shown = enrolled.groupby("label")["image_id"].agg(lambda ids: "+".join(sorted({part(i) for i in ids})))
    side = matched(recognizer, queries, set(shown.index))
    ranked, actual, _ = answered(Fused(recognizer.fused.fusion), side, "photo")
    hits: dict[str, list[bool]] = {}
    for r, truth in zip(ranked, actual, strict=True):
        if truth != recognizer.unknown_label:
            hits.setdefault(shown[truth], []).append(bool(r.labels) and r.labels[0] == truth)
    return {k: f"{sum(v)} of {len(v)} (chance {len(v) / len(shown):.1f})" for k, v in hits.items()}


def _counts(parts: dict[str, object]) -> str:
    return ", ".join(f"{name} {n}" for name, n in parts.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="lions", choices=["nyala", "lions"])
    parser.add_argument("--index", type=Path, help="a protocol B index: its first answers per enrolled part")
    args = parser.parse_args()
    table = select_split(read_dataset(SHARED / args.dataset), "eval")
    result = {"dataset": args.dataset, **overlap(table)}
    if args.index:
        result["first_right_by_enrolled_part"] = first_right(args.index, table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"part_overlap_{args.dataset}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Protocol B on {args.dataset}: known queries that show a part their enrolled photos show",
        "",
        f"{result['with_an_enrolled_part']} of {result['known_queries']} known queries "
        f"({result['identities_enrolled']} identities enrolled).",
        "",
        f"Enrolled parts: {_counts(result['enrolled_parts'])}.",
        "",
        f"Known queries' parts: {_counts(result['query_parts'])}.",
        "",
        f"Known queries by the part their identity enrolled: {_counts(result['queries_by_enrolled_part'])}.",
    ]
    command = f"python benchmarks/part_overlap.py --dataset {args.dataset}"
    if args.index:
        lines += ["", f"Fused first identity right, by enrolled part ({args.index.name}): "
                  f"{_counts(result['first_right_by_enrolled_part'])}."]  # fmt: skip
        command += f" --index WORK/{args.dataset}/{args.index.name}"
    lines += ["", f"Reproduce: `{command}`"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
