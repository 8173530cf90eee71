#!/usr/bin/env bash
# The whole workflow on the built-in demo set, from a fresh clone: install, demo data, measure the
# untrained backbone, train, build the index, query, enrol a new landmark from one photo, query it, eval.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
OUT=${DEMO_DIR:-demo-run}
bash scripts/install.sh
k() { echo "+ kenning $*" >&2; .venv/bin/kenning "$@"; }

k demo-data "$OUT/data"

echo "== before training: ImageNet backbone features, no training"
k train-embed --data "$OUT/data" --out "$OUT/untrained" -c configs/cpu-quick.yaml --epochs 0 --embedding-dim 0
k build-index --model "$OUT/untrained" --data "$OUT/data" --split test --out "$OUT/index-untrained" -c configs/cpu-quick.yaml
k eval --index "$OUT/index-untrained" --data "$OUT/data" --out "$OUT/eval-untrained"

echo "== training"
k train-embed --data "$OUT/data" --out "$OUT/model" -c configs/cpu-quick.yaml
k build-index --model "$OUT/model" --data "$OUT/data" --split test --out "$OUT/index" -c configs/cpu-quick.yaml

echo "== query a gallery landmark, and a non-landmark photo"
k query "$OUT/data/images/test/landmark_070/1.jpg" "$OUT/data/images/test/distractors/0.jpg" --index "$OUT/index"

echo "== enrol a landmark the system has never seen, from one photo; query another photo of it"
k query "$OUT/data/enroll/new_landmark_1.jpg" --index "$OUT/index"
k enroll "$OUT/data/enroll/new_landmark_0.jpg" --index "$OUT/index" --label my_new_landmark
k query "$OUT/data/enroll/new_landmark_1.jpg" --index "$OUT/index"

echo "== after training"
k eval --index "$OUT/index" --data "$OUT/data" --out "$OUT/eval"

.venv/bin/python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
before = json.load(open(f"{out}/eval-untrained/metrics.json"))
after = json.load(open(f"{out}/eval/metrics.json"))
print(f"\n{'metric':<18}{'untrained':>10}{'trained':>10}")
for key in ("recall@1", "recall@5", "map@5", "gap", "known_accuracy", "unknown_accuracy"):
    print(f"{key:<18}{before[key]:>10.4f}{after[key]:>10.4f}")
PY
echo "demo finished in $(( $(date +%s) - start ))s; outputs in $OUT/"
