# Shared body of the image-autoencoder recipes (recipes/cifar10/run.sh, recipes/vqvae/run.sh), sourced by them
# after they set:
#   rows         default rows (configs conf/<row>.yaml of the recipe)
#   bottlenecks  the values --bottleneck accepts, "" where the recipe has no such option, and then
#   bottleneck   the default one and bottleneck_note, what the values are (for the error message)
# Options and stages: the recipe's header, printed by --help. Experiments go to exp/<recipe>/{full,mini} (with
# _<bottleneck> where the recipe has one).
wrapper=${BASH_SOURCE[1]}
recipe=$(cd "$(dirname "$wrapper")" && pwd)
repo=$(cd "$recipe/../.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

stage=0 stop_stage=3 corpus="" mini=0 exp="" extra=()

# the wrapper's header comment (after the #! line), without the leading '# '
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$wrapper" | sed 's/^# \{0,1\}//'; exit "${1:-1}"; }
unknown_option() { echo "run.sh: unknown option $1" >&2; usage; }
while [ $# -gt 0 ]; do
  case "$1" in
    --data) corpus=$2; shift 2 ;;
    --mini) mini=1; shift ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --bottleneck) [ -n "$bottlenecks" ] || unknown_option "$1"; bottleneck=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; extra=("$@"); break ;;
    *) unknown_option "$1" ;;
  esac
done
if [ -n "$bottlenecks" ] && ! [[ " $bottlenecks " == *" $bottleneck "* ]]; then
  echo "run.sh: --bottleneck must be ${bottlenecks// / or } ($bottleneck_note), got $bottleneck" >&2; exit 1
fi
if [ "$mini" = 1 ] && [ -n "$corpus" ]; then echo "run.sh: give --data CIFAR or --mini, not both" >&2; exit 1; fi
if [ "$mini" = 1 ]; then
  corpus=$repo/data/mini_images
  exp=${exp:-$repo/exp/$(basename "$recipe")/mini${bottlenecks:+_$bottleneck}}
elif [ -n "$corpus" ]; then
  [ -e "$corpus" ] || { echo "run.sh: $corpus: no such file or folder (cifar-10-python.tar.gz)" >&2; exit 1; }
  corpus=$(cd "$(dirname "$corpus")" && pwd)/$(basename "$corpus")
  exp=${exp:-$repo/exp/$(basename "$recipe")/full${bottlenecks:+_$bottleneck}}
else
  usage
fi

# overrides of one row: the bottleneck (G x K), the --mini lines that apply to it, then the command line's
row_overrides() {
  if [ -n "$bottlenecks" ]; then
    echo "model.num_codebooks=${bottleneck%x*}"
    echo "model.quantizer.codebook_size=${bottleneck#*x}"
  fi
  if [ "$mini" = 1 ]; then
    grep -v '^\s*#' "$recipe/conf/mini.overrides" | awk -F': ' '$1 == "*" { print $2 }'
    grep -v '^\s*#' "$recipe/conf/mini.overrides" | awk -v row="$1" -F': ' '$1 == row { print $2 }'
  fi
  echo "data.corpus=$corpus"
  for item in "${extra[@]+"${extra[@]}"}"; do echo "$item"; done
}

for row in $rows; do
  [ -f "$recipe/conf/$row.yaml" ] || { echo "run.sh: no config conf/$row.yaml" >&2; exit 1; }
done

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ] && [ "$mini" = 1 ]; then
  if [ -f "$corpus/test_batch" ]; then
    echo "stage 0: $corpus already built"
  else
    echo "stage 0: building the mini image set in $corpus"
    python "$repo/data_prep/make_mini_images.py" --out "$corpus"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  mkdir -p "$exp"
  for row in $rows; do
    mapfile -t overrides < <(row_overrides "$row")
    echo "stage 1: training $row -> $exp/$row"
    start=$(date +%s)
    python -m seqvq.cli train "$recipe/conf/$row.yaml" "${overrides[@]}" --exp-dir "$exp/$row"
    echo "$row trained in $(( $(date +%s) - start )) s" | tee -a "$exp/train_times.txt"
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  for row in $rows; do
    echo "stage 2: evaluating $row"
    python -m seqvq.cli evaluate "$exp/$row/checkpoints/last.pt" "$corpus" --out "$exp/$row/eval"
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  "$recipe/table3.sh" "$exp" $rows
fi
