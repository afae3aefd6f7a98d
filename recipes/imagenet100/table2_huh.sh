#!/usr/bin/env bash
# Table 2 of Huh et al. 2023 (classification: top-1 accuracy and code perplexity per remedy) on ImageNet100
# (--data DIR) or the built digit set (--mini, default): trains and evaluates every (model, row) through run.sh
# (--jobs at a time, OMP_NUM_THREADS = cores / jobs each) and prints the ablation as markdown. Rows that already
# have eval/figures.json are not retrained (delete EXP/<model>/<row> to redo one).
#
#   bash recipes/imagenet100/table2_huh.sh [--mini | --data DIR] [--models "resnet18 alexnet vit_tiny"]
#        [--rows "novq none affine sync alternating replace all"] [--jobs 2] [--exp DIR] [--table NAME]
#        [--seeds N] [--table-only] [-- train.steps=N ...]
#
# --seeds N trains seeds 0..N-1 of every row (seed 0 in EXP/<model>/<row>, seed k > 0 in EXP/<model>/<row>_seedk,
# with train.seed=k); the table then gives each figure as the mean ± sample standard deviation over the row's
# evaluated seeds, with their count.
# --table NAME also writes the table to EXP/NAME.md (e.g. --table modern for the modern-remedies rows,
# README.md); without it the table is printed only. --table-only prints (and writes) the table of the runs already
# in EXP without preparing data or training.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/runs.sh"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
models="resnet18" rows="novq none affine sync alternating replace all" jobs=2 exp="" data_args=(--mini) overrides=()
mini=1 table="" table_only=0 seeds=1
while [ $# -gt 0 ]; do
  case "$1" in
    --mini) shift ;;
    --data) data_args=(--data "$2"); data=$2; mini=0; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --table) table=$2; shift 2 ;;
    --table-only) table_only=1; shift ;;
    --seeds) seeds=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; overrides=("$@"); break ;;
    *) echo "error: table2_huh.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
  esac
done
[[ $seeds =~ ^[1-9][0-9]*$ ]] || { echo "error: table2_huh.sh: --seeds takes a count >= 1, got '$seeds'" >&2; exit 1; }
if [ -n "$table" ] && ! [[ $table =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]]; then
  echo "error: table2_huh.sh: --table takes a file name without a folder (EXP/NAME.md), got '$table'" >&2; exit 1
fi
for model in $models; do
  for row in $rows; do
    [ -f "$here/conf/$model/$row.yaml" ] || [ "$table_only" = 1 ] || {
      echo "error: table2_huh.sh: no config conf/$model/$row.yaml; see the rows of recipes/imagenet100/README.md" >&2
      exit 1; }
  done
done
[ "$mini" = 1 ] && exp=${exp:-$repo/exp/imagenet100/mini} || exp=${exp:-$repo/exp/imagenet100/$(data_key "$data")}
if [ "$table_only" = 0 ]; then
  start=$(date +%s)
  bash "$here/run.sh" "${data_args[@]}" --stage 0 --stop-stage 0
  mkdir -p "$exp/logs"
  source "$repo/recipes/common/jobs.sh"
  threads=${OMP_NUM_THREADS:-$(( $(cpu_cores) / jobs ))}; (( threads >= 1 )) || threads=1
  for (( seed = 0; seed < seeds; seed++ )); do  # seed-major: a partial table already has every row
    for model in $models; do
      for row in $rows; do
        run=$row seed_args=()
        (( seed == 0 )) || { run=${row}_seed$seed; seed_args=(train.seed=$seed); }
        [ -f "$exp/$model/$run/eval/figures.json" ] && continue
        echo "table2_huh.sh: $model/$run (log: $exp/logs/$model-$run.log)"
        start_job "$exp/logs/$model-$run.log" env OMP_NUM_THREADS="$threads" bash "$here/run.sh" "${data_args[@]}" \
          --model "$model" --config "$row" --stage 1 --exp "$exp/$model/$run" -- \
          ${overrides[@]+"${overrides[@]}"} ${seed_args[@]+"${seed_args[@]}"}
      done
    done
  done
  wait_jobs
  echo "table2_huh.sh: $(( $(date +%s) - start )) s"
elif [ ! -d "$exp" ]; then
  echo "error: table2_huh.sh: --table-only: no runs in $exp; give the --exp DIR of the trained rows" >&2; exit 1
fi

PYTHONPATH="$repo:$repo/recipes/common${PYTHONPATH:+:$PYTHONPATH}" python3 - "$exp" "$models" "$rows" "$table" "$seeds" <<'PY'
import json
import os
import statistics
import sys
from pathlib import Path

from seed_table import cell, run_dir  # the speech and handwriting tables' mean ± sd cell and seed folder naming
from seqvq.train.logs import atomic_write_text

exp, models, rows, table, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], int(sys.argv[5])
# Huh's four methods per row (A, S, L, R): None = no VQ; rows that use none of them (the plain row, Łańcucki's
# remedy, the modern remedies) get "" and a label naming their method in the Row column.
METHODS = {"novq": None, "none": "", "affine": "A", "sync": "S", "alternating": "L", "replace": "R", "all": "ASLR"}
LABELS = {
    "bn_reestimation": "+ BN + data-dep reest", "modern_rotation": "rotation trick",
    "modern_simvq": "SimVQ linear map", "modern_usage_kl": "usage regularizer (KL)", "modern_fsq": "FSQ 8x5x5x5",
    "modern_bsq": "BSQ 10 bits", "modern_bn_fsq": "FSQ 8x5x5x5 + BN",
    "modern_bn_reestimation_rotation": "+ BN + data-dep reest + rotation trick",
    "modern_bn_reestimation_simvq": "+ BN + data-dep reest + SimVQ",
    "modern_bn_reestimation_usage_kl": "+ BN + data-dep reest + usage regularizer (KL)",
}


def seed_runs(model: str, row: str) -> list[tuple[dict, str]]:
    """(metrics, train seconds) of every evaluated seed of a row: seed 0 in ROW, seed k in ROW_seedk."""
    found = []
    for seed in range(seeds):
        run = run_dir(Path(exp) / model, row, "", seed)
        if (run / "eval" / "figures.json").is_file():
            metrics = json.loads((run / "eval" / "figures.json").read_text())
            seconds_path = run / "train_seconds.txt"
            found.append((metrics, seconds_path.read_text().strip() if seconds_path.is_file() else ""))
    return found


seed_header, seed_rule = (" Seeds |", "---|") if seeds > 1 else ("", "")
lines = [f"| Model | Row | Affine | Sync. | Alt. | Replace |{seed_header} Accuracy | Perplexity | Codes used | Train s |",
         f"|---|---|---|---|---|---|{seed_rule}---|---|---|---|"]
for model in models:
    base = None
    for row in rows:
        methods = METHODS.get(row, "" if row in LABELS else "?")
        label = LABELS.get(row, row)
        marks = " | ".join(["no VQ", "", "", ""] if methods is None else
                           ["✓" if flag in methods else "-" for flag in "ASLR"])
        runs = seed_runs(model, row)
        count = f" {len(runs)}/{seeds} |" if seeds > 1 else ""
        if not runs:
            lines.append(f"| {model} | {label} | {marks} |{count} not evaluated | | | |")
            continue
        accuracies = [m["accuracy"] for m, _ in runs]
        accuracy = cell(accuracies, 1)
        if row == "none":
            base = statistics.fmean(accuracies)
        elif base is not None and methods is not None:
            accuracy += f" ({statistics.fmean(accuracies) - base:+.1f})"
        perplexity = cell([m["code_perplexity"] for m, _ in runs], 1) if "code_perplexity" in runs[0][0] else "-"
        used = cell([m["codes_used"] for m, _ in runs], 0) if "codes_used" in runs[0][0] else "-"
        times = [float(t) for _, t in runs if t]
        seconds = f"{statistics.fmean(times):.0f}" if times else ""
        lines.append(f"| {model} | {label} | {marks} |{count} {accuracy} | {perplexity} | {used} | {seconds} |")
text = "\n".join(lines) + "\n"
print(text, end="")
if table:  # a temporary file renamed over EXP/NAME.md, so an interrupted write never leaves half a table
    atomic_write_text(Path(exp) / f"{table}.md", text)
    print(f"table2_huh.sh: wrote {os.path.join(exp, table + '.md')}")
PY
