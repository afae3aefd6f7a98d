#!/usr/bin/env bash
# ScribbleLens recipe (Łańcucki et al. 2020 §IV-B): trains ONE VQ autoencoder (one Table II row, --config),
# evaluates it on the test split and prints its figures. recipes/scribblelens/table2.sh trains every row.
#
#   recipes/scribblelens/run.sh --mini                                 # built MNIST-lines corpus, minutes
#   recipes/scribblelens/run.sh --data scribblelens.corpus.v1.2.zip   # the real corpus, read in place (paper size)
#   recipes/scribblelens/run.sh --data FOLDER                          # your own PNG/JPEG line images (CPU size)
#
# Stages (--stage N / --stop-stage N): 0 data (--mini: build data/mini_handwriting; a folder: decode and count
# every line, writing nothing into it), 1 train, 2 evaluate and print.
# Options: --config ROW (a file in conf/; default bn_reestimation_codebook_lr), --size cpu|paper (cpu applies
# conf/mini.overrides, the --mini settings; default: paper for the ScribbleLens zip, cpu otherwise), --exp DIR
# (default exp/scribblelens/mini, or exp/scribblelens/<zip or folder name>_<hash of its full path>; the model goes
# to EXP/ROW), --seed N (train.seed; a seed other than 0 trains into EXP/ROW_seedN, so seeds of one row sit side
# by side), --force (start the row's training over when EXP/ROW holds a run of other settings or data, which is
# refused otherwise), and after `--` extra dotted
# overrides, e.g. `-- train.steps=100 data.test_fraction=0.2 model.height=48`. A folder of line images takes
# FOLDER/transcripts.txt and FOLDER/train.txt + test.txt when present, else holds out data.test_fraction (0.1)
# of the images (seqvq/data/image_folder.py). Training resumes from the row's last checkpoint when re-run (the
# same settings on the same data).
# Threads: OMP_NUM_THREADS (default 2 here).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/runs.sh"

recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$recipe/../.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

row=bn_reestimation_codebook_lr
stage=0 stop_stage=2 corpus="" mini=0 exp="" size="" extra=() print_exp=0 seed=0 force=()

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-1}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --data) corpus=$2; shift 2 ;;
    --mini) mini=1; shift ;;
    --config) row=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --print-exp) print_exp=1; shift ;;
    --force) force=(--force); shift ;;
    -h|--help) usage 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "error: run.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
  esac
done
if [ "$mini" = 1 ] && [ -n "$corpus" ]; then echo "error: run.sh: give --data CORPUS or --mini, not both" >&2; exit 1; fi
corpus=$(user_path "$corpus") exp=$(user_path "$exp")
case "$seed" in ''|*[!0-9]*) echo "error: run.sh: --seed must be a non-negative integer" >&2; exit 1 ;; esac
run=$row; [ "$seed" = 0 ] || run=${row}_seed$seed
if [ ! -f "$recipe/conf/$row.yaml" ]; then
  known=$(ls "$recipe/conf" | grep '\.yaml$' | grep -v common | sed 's/\.yaml$//' | tr '\n' ' ')
  echo "error: run.sh: no conf/$row.yaml; configs: $known" >&2; exit 1
fi
if [ "$mini" = 1 ]; then
  corpus=$repo/data/mini_handwriting
  exp=${exp:-$repo/exp/scribblelens/mini}
  size=${size:-cpu}
elif [ -n "$corpus" ]; then
  [ -e "$corpus" ] || { echo "error: run.sh: $corpus: no such file or folder (the ScribbleLens zip, OpenSLR 84, or a \
folder of line images)" >&2; exit 1; }
  exp=${exp:-$repo/exp/scribblelens/$(data_key "$corpus")}
  if [ -f "$corpus" ] && [ "${corpus%.zip}" != "$corpus" ]; then size=${size:-paper}; else size=${size:-cpu}; fi
else
  echo "error: run.sh: give --mini (built corpus) or --data CORPUS (the ScribbleLens zip or a folder of line images)" >&2
  exit 1
fi
[ "$size" = cpu ] || [ "$size" = paper ] || { echo "error: run.sh: --size must be cpu or paper" >&2; exit 1; }
if [ "$print_exp" = 1 ]; then echo "$exp"; exit 0; fi  # for table2.sh

# the row's overrides: the --size cpu lines that apply to it and its base: chain (conf/mini.overrides, read by
# recipes/common/row_overrides.py), then the command line's
overrides=()
if [ "$size" = cpu ]; then
  mini_lines=$(python "$repo/recipes/common/row_overrides.py" "$recipe/conf/mini.overrides" "$recipe/conf/$row.yaml")
  [ -z "$mini_lines" ] || mapfile -t overrides <<< "$mini_lines"
fi
overrides+=("data.corpus=$corpus" "train.seed=$seed" ${extra[@]+"${extra[@]}"})

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if [ "$mini" = 1 ]; then
    if [ -f "$corpus/train.npz" ] && [ -f "$corpus/test.npz" ]; then
      echo "stage 0: $corpus already built"
    else
      echo "stage 0: building the mini corpus in $corpus"
      python "$repo/data_prep/make_mini_handwriting.py" --out "$corpus"
    fi
  elif [ -d "$corpus" ]; then
    echo "stage 0: checking $corpus (read only)"
    python "$repo/data_prep/check_line_images.py" "$recipe/conf/$row.yaml" "${overrides[@]}"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "stage 1: training $row, seed $seed ($size size) -> $exp/$run"
  start=$(date +%s)
  python -m seqvq.cli train "$recipe/conf/$row.yaml" "${overrides[@]}" --exp-dir "$exp/$run" \
    ${force[@]+"${force[@]}"}
  mkdir -p "$exp"
  echo "$run trained in $(( $(date +%s) - start )) s" | tee -a "$exp/train_times.txt"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "stage 2: evaluating $run on the test split of $corpus"
  python -m seqvq.cli evaluate "$exp/$run/checkpoints/last.pt" "$corpus" --out "$exp/$run/eval" > /dev/null
  python - "$exp/$run/eval/figures.json" "$run" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
codes = ("pass-through: never quantized" if m.get("quantized") is False
         else f"perplexity {m['code_perplexity']:.1f} | codes used {m['codes_used']:.0f}")
print(f"{sys.argv[2]} (test, {m['lines']:.0f} lines): Rec. BPD {m['bpd']:.3f} | {codes} | uniform NELBO "
      f"{m['uniform_nelbo']:.3f} | unigram NELBO {m['unigram_nelbo']:.3f} bits | reconstructions: "
      f"{sys.argv[1].replace('figures.json', 'reconstructions.png')}")
PY
fi
