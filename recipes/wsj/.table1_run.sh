#!/usr/bin/env bash
# Table I of Łańcucki et al. 2020 (Dev PER and code perplexity per VQ training variant), plus the Huh et al. 2023
# remedies, on the built corpus (--mini, default) or real WSJ (--data DIR). Prepares data once (run.sh stages
# 0-2), trains and evaluates every variant (run.sh --config ROW, stages 3-4, --jobs at a time), then prints a
# markdown table (Dev CER and WER instead of PER with --units chars|bpe).
#
#   bash recipes/wsj/table1.sh [--mini | --data DIR] [--jobs 2] [--variants "vanilla_vq bn ..."] [-- train.steps=N]
#
# Other options are passed to run.sh (--exp, --size, --train-utts, --units, --vocab-size, ...). Variants that
# already have decode_dev/figures.json are not retrained (delete EXP/VARIANT to redo one).
set -euo pipefail

variants="no_bottleneck:3 vanilla_vq bn bn_codebook_lr bn_ema:3 bn_reestimation:3 bn_reestimation_codebook_lr:3
huh_all"
jobs=2
run_args=()
overrides=()
exp=""
mini=true
suffix=""
units=phones
vocab_size=300
while [[ $# -gt 0 ]]; do
  case "$1" in
    --variants) variants=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --exp) exp=$2; run_args+=(--exp "$2"); shift 2 ;;
    --data) mini=false; run_args+=(--data "$2"); shift 2 ;;
    --mini) shift ;;
    --units) units=$2; run_args+=(--units "$2"); shift 2 ;;
    --vocab-size) vocab_size=$2; run_args+=(--vocab-size "$2"); shift 2 ;;
    --) shift; overrides=("$@"); break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) run_args+=("$1" "$2"); shift 2 ;;
  esac
done
$mini && run_args+=(--mini)
case $units in chars) suffix=_chars ;; bpe) suffix=_bpe$vocab_size ;; esac
$mini && exp=${exp:-exp/wsj_mini} || exp=${exp:-exp/wsj}
here=$(cd "$(dirname "$0")" && pwd)
start_time=$SECONDS

bash "$here/run.sh" "${run_args[@]}" --stage 0 --stop-stage 2

# Runs in seed-major order (every row's seed 0, then every seed 1, ...), so a partial table already has every row.
# Each run uses nproc/jobs threads: fixed per table, because a different thread count changes the float sums.
threads=$(( $(nproc) / jobs )); (( threads >= 1 )) || threads=1
max_seeds=1
for entry in $variants; do [[ $entry == *:* ]] && (( ${entry#*:} > max_seeds )) && max_seeds=${entry#*:}; done
mkdir -p "$exp/logs"
running=0
for (( seed = 0; seed < max_seeds; seed++ )); do
  for entry in $variants; do
    variant=${entry%%:*}; seeds=1
    [[ $entry == *:* ]] && seeds=${entry#*:}
    (( seed < seeds )) || continue
    name=$variant$suffix; (( seed == 0 )) || name=${name}_seed$seed
    if [[ -f $exp/$name/decode_dev/figures.json ]]; then continue; fi
    echo "table1.sh: training $name (log: $exp/logs/$name.log)"
    bash "$here/run.sh" "${run_args[@]}" --config "$variant" --seed "$seed" --threads "$threads" \
      --stage 3 --stop-stage 4 -- ${overrides[@]+"${overrides[@]}"} > "$exp/logs/$name.log" 2>&1 &
    running=$((running + 1))
    if (( running >= jobs )); then
      wait -n || echo "table1.sh: a run failed; see $exp/logs" >&2
      running=$((running - 1))
    fi
  done
done
while (( running > 0 )); do
  wait -n || echo "table1.sh: a run failed; see $exp/logs" >&2
  running=$((running - 1))
done

python3 - "$exp" "$suffix" $variants <<'EOF'
import json, sys
from pathlib import Path

names = {
    "no_bottleneck": "no bottleneck", "vanilla_vq": "vanilla VQ", "bn": "+ BN",
    "bn_codebook_lr": "+ BN + codebook LR", "bn_ema": "+ BN + EMA", "bn_reestimation": "+ BN + data-dep reest",
    "bn_reestimation_codebook_lr": "+ BN + data-dep reest + codebook LR", "huh_affine": "Huh: affine",
    "huh_sync": "Huh: synchronized update", "huh_replacement": "Huh: dead-code replacement",
    "huh_alternating": "Huh: alternating optimization", "modern_rotation": "rotation trick",
    "modern_simvq": "SimVQ linear map", "modern_usage_kl": "usage regularizer (KL)", "modern_fsq": "FSQ 8x8x8",
    "modern_bn_reestimation_rotation": "+ BN + data-dep reest + rotation trick",
    "modern_bn_reestimation_simvq": "+ BN + data-dep reest + SimVQ",
    "modern_bn_reestimation_usage_kl": "+ BN + data-dep reest + usage regularizer", "modern_bn_fsq": "FSQ + BN",
}
exp, suffix = Path(sys.argv[1]), sys.argv[2]
rates = ["cer", "wer"] if suffix else ["per"]
print(f"| Model | {' | '.join(f'Dev {rate.upper()} (%)' for rate in rates)} | Code perplexity | Codes used | Steps |")
print("|---|" + "---|" * (len(rates) + 3))
for variant in sys.argv[3:]:
    path = exp / (variant + suffix) / "decode_dev" / "figures.json"
    if not path.exists():
        print(f"| {names.get(variant, variant)} | (failed or not run) |" + " |" * (len(rates) + 2))
        continue
    f = json.loads(path.read_text())
    perplexity = f"{f['code_perplexity']:.1f}" if "code_perplexity" in f else "N/A"
    print(f"| {names.get(variant, variant)} | {' | '.join(f'{f[rate]:.1f}' for rate in rates)} | {perplexity} "
          f"| {f.get('codes_used', 'N/A')} | {f['step']} |")
EOF
echo "table1.sh: done in $(( (SECONDS - start_time) / 60 )) min"
