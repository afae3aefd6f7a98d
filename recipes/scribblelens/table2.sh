#!/usr/bin/env bash
# Table II of Łańcucki et al. 2020 (Rec. BPD, perplexity, uniform and unigram NELBO in bits), plus the Huh et al.
# 2023 remedies: trains and evaluates every row with run.sh --config ROW (data prepared once), then prints the
# markdown table from EXP/<row>/eval/metrics.json. Rows already evaluated are not retrained (delete EXP/ROW to
# redo one).
#
#   recipes/scribblelens/table2.sh --mini | --data CORPUS [--rows "vanilla bn ..."] [--exp DIR] [--size cpu|paper]
#                                  [-- dotted.key=value ...]
#   recipes/scribblelens/table2.sh --table-only --exp DIR [--rows "..."]    # print the table of trained rows
set -euo pipefail

recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$recipe/../.." && pwd)
rows="vanilla bn bn_codebook_lr bn_ema bn_reestimation bn_reestimation_codebook_lr huh_affine huh_sync
huh_alternating huh_replacement"
run_args=() extra=() exp="" table_only=0 rows_given=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows=$2; rows_given=1; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --table-only) table_only=1; shift ;;
    --mini) run_args+=(--mini); shift ;;
    --data|--size) run_args+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "table2.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
  esac
done

if [ "$table_only" = 0 ]; then
  if [ ${#run_args[@]} -eq 0 ]; then
    echo "table2.sh: give --mini or --data CORPUS (or --table-only --exp DIR)" >&2; exit 1
  fi
  if [ -z "$exp" ]; then  # the directory run.sh would choose, so that every row lands in the same one
    exp=$(bash "$recipe/run.sh" "${run_args[@]}" --print-exp)
  fi
  start_time=$(date +%s)
  bash "$recipe/run.sh" "${run_args[@]}" --exp "$exp" --stage 0 --stop-stage 0 -- ${extra[@]+"${extra[@]}"}
  for row in $rows; do
    if [ -f "$exp/$row/eval/metrics.json" ]; then echo "table2.sh: $row already evaluated"; continue; fi
    bash "$recipe/run.sh" "${run_args[@]}" --exp "$exp" --config "$row" --stage 1 --stop-stage 2 \
      -- ${extra[@]+"${extra[@]}"} || echo "table2.sh: $row failed" >&2
  done
  echo "table2.sh: done in $(( $(date +%s) - start_time )) s"
fi
[ -n "$exp" ] || { echo "table2.sh: --table-only needs --exp DIR" >&2; exit 1; }
[ "$rows_given" = 1 ] || [ "$table_only" = 0 ] || rows=""

python - "$exp" $rows <<'PY'
import json
import os
import sys

LABELS = {
    "vanilla": "vanilla VQ",
    "bn": "+ BN",
    "bn_codebook_lr": "+ BN + codebook LR",
    "bn_ema": "+ BN + EMA",
    "bn_reestimation": "+ BN + data-dep reest",
    "bn_reestimation_codebook_lr": "+ BN + data-dep reest + codebook LR",
    "huh_affine": "Huh: affine reparameterization",
    "huh_sync": "Huh: synchronized update",
    "huh_alternating": "Huh: alternating optimization",
    "huh_replacement": "dead-code replacement",
}
exp, rows = sys.argv[1], sys.argv[2:]
if not rows:
    rows = [r for r in LABELS if os.path.isfile(os.path.join(exp, r, "eval", "metrics.json"))]
print("| Model | Rec. BPD | Pplx | Codes used | Uniform NELBO bits | Unigram NELBO bits |")
print("|---|---|---|---|---|---|")
evaluated = []
for row in rows:
    path = os.path.join(exp, row, "eval", "metrics.json")
    if not os.path.isfile(path):
        print(f"| {LABELS.get(row, row)} | not evaluated | | | | |")
        continue
    with open(path) as handle:
        m = json.load(handle)
    evaluated.append(m)
    print(f"| {LABELS.get(row, row)} | {m['bpd']:.3f} | {m['perplexity']:.1f} | {m['codes_used']:.0f} | "
          f"{m['uniform_nelbo']:.3f} | {m['unigram_nelbo']:.3f} |")
if evaluated:
    print(f"\nTest lines: {evaluated[0]['lines']:.0f}; NELBO = BPD + bits per latent / "
          f"{evaluated[0]['pixels_per_latent']:.0f} pixels per latent (line height x width stride).")
PY
