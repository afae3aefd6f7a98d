#!/usr/bin/env bash
# Table 2 of Huh et al. 2023 (classification: top-1 accuracy and code perplexity per remedy) on ImageNet100
# (--data DIR) or the built digit set (--mini, default): trains and evaluates every (model, row) through run.sh
# (--jobs at a time, OMP_NUM_THREADS = cores / jobs each) and prints the ablation as markdown. Rows that already
# have eval/metrics.json are not retrained (delete EXP/<model>/<row> to redo one).
#
#   bash recipes/imagenet100/table2_huh.sh [--mini | --data DIR] [--models "resnet18 alexnet vit_tiny"]
#        [--rows "novq none affine sync alternating replace all"] [--jobs 2] [--exp DIR] [-- train.steps=N ...]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
models="resnet18" rows="novq none affine sync alternating replace all" jobs=2 exp="" data_args=(--mini) overrides=()
mini=1
while [ $# -gt 0 ]; do
  case "$1" in
    --mini) shift ;;
    --data) data_args=(--data "$2"); mini=0; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; overrides=("$@"); break ;;
    *) echo "table2_huh.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
[ "$mini" = 1 ] && exp=${exp:-$repo/exp/imagenet100/mini} || exp=${exp:-$repo/exp/imagenet100/full}
start=$(date +%s)

bash "$here/run.sh" "${data_args[@]}" --stage 0 --stop-stage 0
mkdir -p "$exp/logs"
source "$repo/recipes/common/jobs.sh"
threads=${OMP_NUM_THREADS:-$(( $(cpu_cores) / jobs ))}; (( threads >= 1 )) || threads=1
for model in $models; do
  for row in $rows; do
    [ -f "$exp/$model/$row/eval/metrics.json" ] && continue
    echo "table2_huh.sh: $model/$row (log: $exp/logs/$model-$row.log)"
    start_job "$exp/logs/$model-$row.log" env OMP_NUM_THREADS="$threads" bash "$here/run.sh" "${data_args[@]}" \
      --model "$model" --config "$row" --stage 1 --exp "$exp/$model/$row" -- ${overrides[@]+"${overrides[@]}"}
  done
done
wait_jobs
echo "table2_huh.sh: $(( $(date +%s) - start )) s"

python3 - "$exp" "$models" "$rows" <<'PY'
import json
import os
import sys

exp, models, rows = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
METHODS = {"novq": None, "none": "", "affine": "A", "sync": "S", "alternating": "L", "replace": "R", "all": "ASLR"}
print("| Model | Row | Affine | Sync. | Alt. | Replace | Accuracy | Perplexity | Codes used | Train s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for model in models:
    base = None
    for row in rows:
        path = os.path.join(exp, model, row, "eval", "metrics.json")
        methods = METHODS.get(row, "?")
        marks = " | ".join(["no VQ", "", "", ""] if methods is None else
                           ["✓" if flag in methods else "-" for flag in "ASLR"])
        if not os.path.isfile(path):
            print(f"| {model} | {row} | {marks} | not evaluated | | | |")
            continue
        with open(path) as handle:
            m = json.load(handle)
        seconds_path = os.path.join(exp, model, row, "train_seconds.txt")
        seconds = open(seconds_path).read().strip() if os.path.isfile(seconds_path) else ""
        accuracy = f"{m['accuracy']:.1f}"
        if row == "none":
            base = m["accuracy"]
        elif base is not None and methods is not None:
            accuracy += f" ({m['accuracy'] - base:+.1f})"
        perplexity = f"{m['perplexity']:.1f}" if "perplexity" in m else "-"
        used = f"{m['codes_used']:.0f}" if "codes_used" in m else "-"
        print(f"| {model} | {row} | {marks} | {accuracy} | {perplexity} | {used} | {seconds} |")
PY
