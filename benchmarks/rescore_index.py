"""Benchmark helper: a copy of a built index with other LNBNN scoring settings, its fusion and
thresholds fitted again on the model's held-out identities, its features kept.

`local.spatial`, `local.spatial_tolerance`, `local.identity_score` and `local.whiten` change how the
stored features' votes are scored, not what is extracted, so a copy of an index with new values and the
calibration build-index makes after extraction (kenning/build.py `_calibrate`, the same call) is the
index a fresh build with those values gives, in minutes instead of the ~40 that extracting a nyala
split's sift+disk features again takes (checked: the fusion calibrators of a nyala protocol A index
rescored to nsum equal those of the index built with nsum). Unknown thresholds are chosen again
where the source index had them (a protocol A index is closed-set: none). Other keys are refused.
The calibration uses the index keys of local_matching.py's runs (their unknown label, MAP@5
objective); its `--set index.*` adds to them.

    python benchmarks/rescore_index.py --index WORK/nyala/catalogue-views-index-sift_disk_sp30 \
        --out WORK/nyala/catalogue-views-index-sift_disk_sp30_nsum_tol30 \
        --set local.identity_score=nsum --set local.spatial_tolerance=30
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

from local_matching import TRAIN

from kenning.atomic import atomic_write_json
from kenning.build import _calibrate, _outside
from kenning.config import load_config, parse_assignment
from kenning.errors import KenningError
from kenning.holdout_calibration import readable_holdout
from kenning.recognizer import Recognizer

SCORING = ("local.spatial", "local.spatial_tolerance", "local.identity_score", "local.whiten")


def rescore(index: Path, out: Path, sets: list[str]) -> None:
    """`out`: `index` copied with the scoring keys of `sets` and calibrated anew."""
    overrides = dict(parse_assignment(a) for a in sets)
    if unknown := [k for k in overrides if k not in SCORING and not k.startswith("index.")]:
        raise KenningError(f"{', '.join(unknown)} would change the features: build the index again instead")
    cfg = load_config(None, {**TRAIN, "index.unknown_label": "new_whale", **overrides})  # checked as a build checks
    if out.exists():
        raise KenningError(f"{out} exists: choose another --out")
    shutil.copytree(index, out, ignore=shutil.ignore_patterns("*.lock"))
    manifest = json.loads((out / "manifest.json").read_text())
    local = dataclasses.asdict(cfg.local)
    manifest["local"].update({key: local[key] for key in (k.split(".", 1)[1] for k in overrides if k in SCORING)})
    atomic_write_json(out / "manifest.json", manifest)  # a copy no one else has opened yet: no lock to take
    recognizer = Recognizer.open(out)
    model_dir, fingerprint = recognizer.index.manifest.model_dir, recognizer.model_manifest.fingerprint
    holdout = _outside(readable_holdout(model_dir, fingerprint), recognizer.index.table)
    thresholds = manifest["threshold"] is not None or (manifest["fusion"] or {}).get("threshold") is not None
    calibration = _calibrate(recognizer, holdout, cfg.index, out, local_on=True, thresholds=thresholds)
    print(f"{out}: local {manifest['local']}; threshold {calibration.threshold if calibration else None}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], help="local.spatial / spatial_tolerance / identity_score")
    args = parser.parse_args()
    rescore(args.index, args.out, args.set)


if __name__ == "__main__":
    main()
