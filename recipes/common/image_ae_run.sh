# Shared body of the image-autoencoder recipes' run.sh (recipes/cifar10, recipes/vqvae), sourced by them after
# they set:
#   config       the default row (conf/<config>.yaml of the recipe)
#   bottlenecks  the values --bottleneck accepts, "" where the recipe has no such option, and then
#   bottleneck   the default one and bottleneck_note, what the values are (for the error message)
# Options and stages: the recipe's header, printed by --help. Experiments go to exp/<recipe>/mini, or
# exp/<recipe>/<data name>_<hash of its full path> (recipes/common/runs.sh), with _<bottleneck> where the recipe
# has one; the row to EXP/<config>, or EXP/<config>_seedN for --seed N > 0. --force starts a row's training over
# when EXP/<row> holds a run of other settings or data (refused otherwise).
source "$(dirname "${BASH_SOURCE[0]}")/runs.sh"
wrapper=${BASH_SOURCE[1]}
recipe=$(cd "$(dirname "$wrapper")" && pwd)
repo=$(cd "$recipe/../.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

stage=0 stop_stage=2 corpus="" mini=0 exp="" seed=0 print_exp=0 extra=() force=()

# the wrapper's header comment (after the #! line), without the leading '# '
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$wrapper" | sed 's/^# \{0,1\}//'; exit 0; }
unknown_option() { echo "error: run.sh: unknown option $1 (see --help)" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --data) corpus=$2; shift 2 ;;
    --mini) mini=1; shift ;;
    --config) config=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --bottleneck) [ -n "$bottlenecks" ] || unknown_option "$1"; bottleneck=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --print-exp) print_exp=1; shift ;;
    --force) force=(--force); shift ;;
    -h|--help) usage ;;
    --) shift; extra=("$@"); break ;;
    *) unknown_option "$1" ;;
  esac
done
if [ -n "$bottlenecks" ] && ! [[ " $bottlenecks " == *" $bottleneck "* ]]; then
  echo "error: run.sh: --bottleneck must be ${bottlenecks// / or } ($bottleneck_note), got $bottleneck" >&2; exit 1
fi
if [ ! -f "$recipe/conf/$config.yaml" ]; then
  known=$(ls "$recipe/conf" | grep '\.yaml$' | grep -v '^common\.yaml$' | sed 's/\.yaml$//' | paste -sd ' ')
  echo "error: run.sh: no conf/$config.yaml; configs: $known" >&2; exit 1
fi
[[ $seed =~ ^[0-9]+$ ]] || { echo "error: run.sh: --seed must be a non-negative integer, got $seed" >&2; exit 1; }
if [ "$mini" = 1 ] && [ -n "$corpus" ]; then echo "error: run.sh: give --data CIFAR or --mini, not both" >&2; exit 1; fi
corpus=$(user_path "$corpus") exp=$(user_path "$exp")
if [ "$mini" = 1 ]; then
  corpus=$repo/data/mini_images
  exp=${exp:-$repo/exp/$(basename "$recipe")/mini${bottlenecks:+_$bottleneck}}
elif [ -n "$corpus" ]; then
  [ -e "$corpus" ] || { echo "error: run.sh: $corpus: no such file or folder (cifar-10-python.tar.gz)" >&2; exit 1; }
  exp=${exp:-$repo/exp/$(basename "$recipe")/$(data_key "$corpus")${bottlenecks:+_$bottleneck}}
else
  echo "error: run.sh: give --mini (built set) or --data CIFAR (cifar-10-python.tar.gz or cifar-10-batches-py/)" >&2
  exit 1
fi
if [ "$print_exp" = 1 ]; then echo "$exp"; exit 0; fi  # for table3.sh
name=$config
[ "$seed" = 0 ] || name=${config}_seed$seed

# the row's overrides: the bottleneck (G x K), the --mini lines that apply to it, the seed, then the command line's
overrides=()
if [ -n "$bottlenecks" ]; then
  overrides+=("model.num_codebooks=${bottleneck%x*}" "model.quantizer.codebook_size=${bottleneck#*x}")
fi
if [ "$mini" = 1 ]; then  # the lines for the row and its base: chain (recipes/common/row_overrides.py)
  mini_lines=$(python "$repo/recipes/common/row_overrides.py" "$recipe/conf/mini.overrides" "$recipe/conf/$config.yaml")
  [ -z "$mini_lines" ] || mapfile -t -O ${#overrides[@]} overrides <<< "$mini_lines"
fi
overrides+=("train.seed=$seed" "data.corpus=$corpus" ${extra[@]+"${extra[@]}"})

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ] && [ "$mini" = 1 ]; then
  if [ -f "$corpus/test_batch" ]; then
    echo "stage 0: $corpus already built"
  else
    echo "stage 0: building the mini image set in $corpus"
    python "$repo/data_prep/make_mini_images.py" --out "$corpus"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "stage 1: training $config (seed $seed) -> $exp/$name"
  start=$(date +%s)
  python -m seqvq.cli train "$recipe/conf/$config.yaml" "${overrides[@]}" --exp-dir "$exp/$name" \
    ${force[@]+"${force[@]}"}
  echo "$name trained in $(( $(date +%s) - start )) s" | tee -a "$exp/train_times.txt"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "stage 2: evaluating $name on the test split of $corpus"
  python -m seqvq.cli evaluate "$exp/$name/checkpoints/last.pt" "$corpus" --out "$exp/$name/eval" > /dev/null
  python "$repo/recipes/common/image_ae_table.py" "$(basename "$recipe")" "$exp" "$name"
fi
