#!/usr/bin/env bash
# The whole workflow on the built-in demo set, from a fresh clone: install, demo data, measure the
# untrained backbone, train, build the index, query, enrol a new landmark from one photo, query it, eval.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
OUT=${DEMO_DIR:-demo-run}
bash scripts/install.sh
echo "install took $(( $(date +%s) - start ))s"
k() { echo "+ kenning $*" >&2; .venv/bin/kenning "$@"; }

k demo-data "$OUT/data"

echo "== before training: ImageNet backbone features, no training"
k train-embed --data "$OUT/data" --out "$OUT/untrained" -c configs/cpu-quick.yaml --epochs 0 --embedding-dim 0
k build-index --model "$OUT/untrained" --data "$OUT/data" --split test --out "$OUT/index-untrained" -c configs/cpu-quick.yaml
k eval --index "$OUT/index-untrained" --data "$OUT/data" --report "$OUT/eval-untrained"

echo "== training"
k train-embed --data "$OUT/data" --out "$OUT/model" -c configs/cpu-quick.yaml --set train.cache_dir="$OUT/feature-cache"
# --replace: a rerun rebuilds the demo's own index, dropping the enrolment made below
k build-index --model "$OUT/model" --data "$OUT/data" --split test --out "$OUT/index" -c configs/cpu-quick.yaml --local sift --replace

echo "== query a gallery landmark, and a non-landmark photo"
k query "$OUT/data/images/test/landmark_070/1.jpg" "$OUT/data/images/test/distractors/0.jpg" --index "$OUT/index"

echo "== enrol a landmark the system has never seen, from one photo; query four other photos of it"
k query "$OUT/data/enroll/new_landmark_1.jpg" --index "$OUT/index"
k enroll "$OUT/data/enroll/new_landmark_0.jpg" --index "$OUT/index" --label my_new_landmark
k query "$OUT"/data/enroll/new_landmark_{1,2,3,4}.jpg --index "$OUT/index" --json > "$OUT/enrolled-queries.json"
k query "$OUT"/data/enroll/new_landmark_{1,2,3,4}.jpg --index "$OUT/index" --json --no-local > "$OUT/enrolled-queries-embedding.json"
.venv/bin/python - "$OUT/enrolled-queries-embedding.json" "$OUT/enrolled-queries.json" <<'PY'
import json, sys
for path, system in zip(sys.argv[1:], ("embedding only (--no-local)", "fused with local matching")):
    answers = json.load(open(path))
    print(f"-- {system}")
    for a in answers:
        labels = [p["label"] for p in a["predictions"]]
        rank = labels.index("my_new_landmark") + 1 if "my_new_landmark" in labels else None
        print(f"{a['image']}: {' '.join(labels)}  (my_new_landmark at rank {rank})")
    top1 = sum(a["predictions"][0]["label"] == "my_new_landmark" for a in answers)
    print(f"{system}: my_new_landmark is the first answer for {top1} of {len(answers)} other photos of it")
PY

echo "== after training: the embedding alone, then fused with local matching"
k eval --index "$OUT/index" --data "$OUT/data" --no-local --report "$OUT/eval-embedding"
k eval --index "$OUT/index" --data "$OUT/data" --report "$OUT/eval"

.venv/bin/python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
runs = [("untrained", "eval-untrained"), ("trained", "eval-embedding"), ("+ local", "eval")]
figures = [json.load(open(f"{out}/{folder}/metrics.json")) for _, folder in runs]
print(f"\n{'metric':<18}" + "".join(f"{name:>11}" for name, _ in runs))
for key in ("recall@1", "recall@5", "map@5", "gap", "known_accuracy", "unknown_accuracy"):
    print(f"{key:<18}" + "".join(f"{m[key]:>11.4f}" for m in figures))
PY
echo "demo finished in $(( $(date +%s) - start ))s; outputs in $OUT/"
echo "browse, identify and enrol in a web page: .venv/bin/kenning serve --index $OUT/index   (then open http://127.0.0.1:8000/)"
