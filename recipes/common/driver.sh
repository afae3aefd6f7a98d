# The recipe driver, sourced first thing by every recipe's run.sh (before any cd). A recipe then sets its defaults
# (recipe_about, config, and any option's variable), declares its own options (`option`) and its stages in order
# (`stage`, with `stage train` where training goes), defines stage_<name> for each of its own stages, optionally
# recipe_setup (after the options are read: checks them, sets mini_data, exp_default or exp_suffix, size, conf_dir,
# run_prefix, run_suffix) and recipe_run_setup (once EXP and RUN are known: sets recipe_overrides, the overrides the
# recipe gives seqvq train, e.g. its data paths), and ends with `driver_main "$@"`. The driver owns the rest, once
# for every recipe:
#   - one option parser, the options every recipe has (below) and --help, generated from the option table;
#   - paths the user gives (every `path:` option) are relative to the directory run.sh was called from;
#   - one size convention: a config holds the paper's size; --size cpu (the default with --mini) adds the lines
#     of CONF/mini.overrides that apply to the row (recipes/common/row_overrides.py);
#   - the default experiment folder EXP: exp/<recipe>/mini, or exp/<recipe>/<data name>_<hash of its full path>
#     (data_key), which no other data set shares; the run goes to EXP/RUN, RUN = CONFIG, or CONFIG_seedN for
#     --seed N > 0;
#   - stage train: `seqvq train` of the resolved config into EXP/RUN (under torchrun for --nproc N > 1 or
#     --torchrun ARGS) with --force passed on (seqvq refuses a run directory of other settings or data without
#     it), and the wall seconds of its training in EXP/RUN/train_seconds.txt;
#   - --threads: the thread count of the run's seqvq commands (stage train, seqvq_evaluate): seqvq's run setting
#     train.threads, and their OMP_NUM_THREADS.
# What each stage of a run is built from is recorded beside its output and checked on a rerun by seqvq itself
# (seqvq/train/stamps.py); a recipe passes "${force_args[@]}" on to its own stages' tools. Installing packages is
# .ci/install.sh's job: need_tool and need_modules name what is missing and how to install it, in one line (the
# driver checks the recipe's python_modules, installed by python_modules_install, before the first stage).

caller_dir=$PWD
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
recipe_name=$(basename "$recipe_dir")
repo=$(cd "$recipe_dir/../.." && pwd)
source "$repo/recipes/common/quote.sh"
python=${PYTHON:-python3}
conf_dir=$recipe_dir/conf

die() { echo "error: run.sh: $*" >&2; exit 1; }

# PATH as the user gave it, absolute: a relative path is relative to the caller's directory (empty stays empty)
user_path() {
  if [ -n "$1" ]; then (cd "$caller_dir" && realpath -m -s -- "$1"); fi
}
# the name of PATH (less .zip, .tar.gz, .tgz) and the first 8 hex digits of the SHA-1 of its absolute path
data_key() {
  local path name
  path=$(user_path "$1")
  name=$(basename -- "$path")
  name=${name%.zip} && name=${name%.tar.gz} && name=${name%.tgz}
  printf '%s_%s\n' "$name" "$(printf '%s' "$path" | sha1sum | cut -c1-8)"
}
need_tool() {  # need_tool COMMAND HOW: exits in one line naming COMMAND and HOW to install it when it is missing
  command -v "$1" > /dev/null || die "$1 is missing; install it with: $2 (or bash .ci/install.sh)"
}
need_modules() {  # need_modules HOW MODULE...: the same for Python modules
  local how=$1 missing; shift
  missing=$("$python" -c "import importlib.util, sys
print(' '.join(name for name in sys.argv[1:] if importlib.util.find_spec(name) is None))" "$@")
  [ -z "$missing" ] || die "the Python modules $missing are missing; install them with: $how (or bash .ci/install.sh)"
}

# The option table. `option --NAME KIND HELP` declares --NAME (variable NAME, dashes as underscores), or changes
# the kind and help of an option already declared; the variable's value when the options are read is its default.
# KIND: flag (true/false), int:METAVAR (>= 0), count:METAVAR (>= 1), path:METAVAR (relative to the caller's
# directory), text:METAVAR, choice:A|B|C, stage (a stage number or name).
option_names=() option_kinds=() option_helps=()
option() {
  local i
  for i in "${!option_names[@]}"; do
    if [ "${option_names[$i]}" = "$1" ]; then option_kinds[$i]=$2 option_helps[$i]=$3; return; fi
  done
  option_names+=("$1") option_kinds+=("$2") option_helps+=("$3")
}
option_var() { local name=${1#--}; echo "${name//-/_}"; }
stage_names=() stage_helps=()
stage() { stage_names+=("$1") stage_helps+=("${2:-}"); }

option --mini flag "the built data set (minutes on a CPU)"
option --data path:DIR "the data set"
option --config text:NAME "the row to train: conf/NAME.yaml"
option --size choice:cpu\|paper "paper: the config as written (the paper's model); cpu: with the lines of \
conf/mini.overrides that apply to the row, a model that trains in minutes on a CPU (default: cpu with --mini, \
paper with --data)"
option --row-overrides path:FILE "a further override file in conf/mini.overrides' syntax (recipes/common/\
row_overrides.py), its lines for the row after the --size cpu ones, e.g. conf/codes16384.overrides: every row at \
16,384 codes (give such runs their own --exp)"
option --seed int:N "train.seed; a seed N > 0 trains into EXP/RUN_seedN, so the seeds of one row sit side by side"
option --nproc count:N "processes: N > 1 trains under torchrun --standalone --nproc-per-node N (DDP: gloo on CPU, \
nccl on CUDA)"
option --torchrun text:ARGS "torchrun's own options for a multi-node run, in place of --standalone, e.g. \
\"--nnodes 2 --node-rank 0 --rdzv-backend c10d --rdzv-endpoint HOST:29400\" (the same on every node)"
option --threads count:N "CPU threads of each seqvq process (train.threads, and its OMP_NUM_THREADS); the \
default follows OMP_NUM_THREADS when it is set"
option --stage stage "the first stage to run, a number or a name"
option --stop-stage stage "the last stage to run"
option --exp path:DIR "the folder of the runs on this data set; the run goes to EXP/RUN (default: \
exp/<recipe>/mini, or exp/<recipe>/<data name>_<hash of its full path>)"
option --print-exp flag "print EXP and stop"
option --print-run flag "print EXP/RUN, the folder of the run, and stop"
option --print-stages flag "print the stage names, one a line, and stop"
option --print-train flag "print the train stage's command (launcher, config, every override) and stop"
option --force flag "rebuild an output whose inputs changed, and start a run's training over when EXP/RUN holds a \
run of other settings or data (both are refused otherwise)"
mini=false data="" config="" size="" row_overrides="" seed=0 nproc=1 torchrun="" threads=${OMP_NUM_THREADS:-2} stage="" stop_stage=""
exp="" print_exp=false print_run=false print_stages=false print_train=false force=false user_overrides=()
python_modules="" python_modules_install="" recipe_about="" mini_data="" exp_default="" exp_suffix="" run_prefix=""
run_suffix="" recipe_overrides=()

print_help() {
  local i kind metavar text default width=24
  [ -z "$recipe_about" ] || printf '%s\n\n' "$recipe_about"
  printf 'usage: %s (--mini | --data %s) [options] [-- key=value ...]\n\n' "recipes/$recipe_name/run.sh" \
    "$(option_metavar --data)"
  echo "Stages (--stage and --stop-stage take a number or a name; default: all):"
  for i in "${!stage_names[@]}"; do
    text=${stage_helps[$i]}
    if [ "${stage_names[$i]}" = train ] && [ -z "$text" ]; then
      text="seqvq train conf/CONFIG.yaml, with every override, into EXP/RUN; a rerun resumes it, or says it is trained"
    fi
    help_line "$i ${stage_names[$i]}" "$text" 14
  done
  echo
  echo "Options (paths are relative to the directory run.sh is called from):"
  for i in "${!option_names[@]}"; do
    kind=${option_kinds[$i]} metavar=""
    case $kind in
      flag) ;;
      choice:*) metavar=${kind#choice:} ;;
      stage) metavar="N|NAME" ;;
      *) metavar=${kind#*:} ;;
    esac
    text=${option_helps[$i]}
    default=${!option_var_cache[$i]}
    if [ "$kind" != flag ] && [ -n "$default" ] && [[ $text != *"(default"* ]]; then
      text="$text (default: $default)"
    fi
    help_line "${option_names[$i]}${metavar:+ $metavar}" "$text" "$width"
  done
  help_line "-h, --help" "print this help" "$width"
  help_line "-- key=value ..." "dotted overrides for seqvq train, after the recipe's, e.g. -- train.steps=100" "$width"
}
help_line() {  # help_line TERM TEXT WIDTH: "  TERM  TEXT", TEXT wrapped at 120 columns under itself
  local indent=$(( $3 + 2 )) first=true line
  if [ ${#1} -ge "$3" ]; then printf '  %s\n' "$1"; first=false; fi  # a long TERM gets a line of its own
  while IFS= read -r line; do
    if $first; then printf "  %-$3s%s\n" "$1" "$line"; first=false; else printf "%${indent}s%s\n" "" "$line"; fi
  done < <(printf '%s\n' "$2" | fold -s -w $(( 120 - indent )) | sed 's/ *$//')
  if $first; then printf '  %s\n' "$1"; fi  # no TEXT
}
option_metavar() {
  local i
  for i in "${!option_names[@]}"; do
    if [ "${option_names[$i]}" = "$1" ]; then echo "${option_kinds[$i]#*:}"; fi
  done
}
option_help() {
  local i
  for i in "${!option_names[@]}"; do
    if [ "${option_names[$i]}" = "$1" ]; then echo "${option_helps[$i]}"; fi
  done
}

stage_index() {  # stage_index OPTION VALUE: the number of a stage given by number or name
  local i
  for i in "${!stage_names[@]}"; do
    if [ "$2" = "$i" ] || [ "$2" = "${stage_names[$i]}" ]; then echo "$i"; return; fi
  done
  die "$1 must be a stage number 0-$(( ${#stage_names[@]} - 1 )) or a name (${stage_names[*]}), got $2"
}

parse_options() {
  local i kind var value choices
  option_var_cache=()
  for i in "${!option_names[@]}"; do option_var_cache[$i]=$(option_var "${option_names[$i]}"); done
  while [ $# -gt 0 ]; do
    case $1 in
      -h|--help) print_help; exit 0 ;;
      --) shift; user_overrides=("$@"); return ;;
    esac
    kind=""
    for i in "${!option_names[@]}"; do
      if [ "${option_names[$i]}" = "$1" ]; then kind=${option_kinds[$i]} var=${option_var_cache[$i]}; break; fi
    done
    [ -n "$kind" ] || die "unknown option $1 (see --help)"
    if [ "$kind" = flag ]; then printf -v "$var" true; shift; continue; fi
    [ $# -ge 2 ] || die "$1 needs a value (see --help)"
    value=$2
    case $kind in
      int:*) [[ $value =~ ^[0-9]+$ ]] || die "$1 must be a non-negative integer, got $value" ;;
      count:*) [[ $value =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive number, got $value" ;;
      choice:*)
        choices=${kind#choice:}
        [[ "|$choices|" == *"|$value|"* ]] ||
          die "$1 must be $(sed 's/|\([^|]*\)$/ or \1/; s/|/, /g' <<< "$choices"), got $value" ;;
      path:*) value=$(user_path "$value") ;;
      stage) value=$(stage_index "$1" "$value") ;;
    esac
    printf -v "$var" '%s' "$value"
    shift 2
  done
}

# seqvq_evaluate CHECKPOINT DATA [OPTION...]: `seqvq evaluate` with the run's threads
seqvq_evaluate() {
  OMP_NUM_THREADS=$threads "$python" -m seqvq.cli evaluate "$1" "$2" "train.threads=$threads" "${@:3}"
}

# The train stage's command: the launcher (python, or torchrun for --nproc N > 1 or --torchrun ARGS), the row's
# config, its overrides (the --size cpu lines, the recipe's, the threads, the seed, the user's), EXP/RUN and --force.
train_command=()
build_train_command() {
  local launcher=("$python")
  if [ "$nproc" -gt 1 ] || [ -n "$torchrun" ]; then
    local rendezvous=(--standalone)
    [ -z "$torchrun" ] || read -r -a rendezvous <<< "$torchrun"
    launcher=("$python" -m torch.distributed.run "${rendezvous[@]}" --nproc-per-node "$nproc")
  fi
  train_command=("${launcher[@]}" -m seqvq.cli train "$config_file" ${overrides[@]+"${overrides[@]}"}
                 --exp-dir "$exp/$run" ${force_args[@]+"${force_args[@]}"})
}


stage_train() {
  local run_dir=$exp/$run before after start=$SECONDS seconds total
  echo "stage train: $run, seed $seed, $size size, $threads thread(s) per process -> $run_dir"
  before=$(stat -c %y "$run_dir/checkpoints/last.pt" 2> /dev/null || true)
  OMP_NUM_THREADS=$threads "${train_command[@]}"
  seconds=$(( SECONDS - start ))
  after=$(stat -c %y "$run_dir/checkpoints/last.pt" 2> /dev/null || true)
  if [ "$after" = "$before" ]; then return; fi  # nothing trained: the run was already trained
  # a resumed run's seconds add to those of its earlier calls; a new run's (or one --force may have restarted) not
  total=$seconds
  if [ -n "$before" ] && ! $force && [ -f "$run_dir/train_seconds.txt" ]; then
    total=$(( $(cat "$run_dir/train_seconds.txt") + seconds ))
  fi
  echo "$total" > "$run_dir/train_seconds.txt.tmp" && mv "$run_dir/train_seconds.txt.tmp" "$run_dir/train_seconds.txt"
  echo "$run trained in $seconds s (in all $total s: $run_dir/train_seconds.txt)"
}

driver_main() {
  local i key lines start_time=$SECONDS
  parse_options "$@"
  if $print_stages; then printf '%s\n' "${stage_names[@]}"; exit 0; fi
  stage=${stage:-0} stop_stage=${stop_stage:-$(( ${#stage_names[@]} - 1 ))}
  if $mini && [ -n "$data" ]; then die "give --mini or --data $(option_metavar --data), not both"; fi
  if ! $mini && [ -z "$data" ]; then
    die "give --mini ($(option_help --mini)) or --data $(option_metavar --data) ($(option_help --data))"
  fi
  if declare -F recipe_setup > /dev/null; then recipe_setup; fi
  if $mini; then data=$mini_data; fi
  if $mini; then key=mini; else key=$(data_key "$data"); fi
  exp=${exp:-${exp_default:-$repo/exp/$recipe_name/$key}$exp_suffix}
  if [ -z "$size" ]; then if $mini; then size=cpu; else size=paper; fi; fi
  config_file=$conf_dir/$config.yaml
  if [ ! -f "$config_file" ]; then
    die "no ${conf_dir#"$recipe_dir"/}/$config.yaml; configs: $(find "$conf_dir" -maxdepth 1 -name '*.yaml' \
      ! -name common.yaml ! -name base.yaml -printf '%f\n' | sed 's/\.yaml$//' | sort | paste -sd ' ')"
  fi
  if $print_exp; then echo "$exp"; exit 0; fi
  run=$run_prefix$config$run_suffix
  if [ "$seed" != 0 ]; then run=${run}_seed$seed; fi
  if $print_run; then echo "$exp/$run"; exit 0; fi
  force_args=()
  if $force; then force_args=(--force); fi
  overrides=()
  if [ "$size" = cpu ]; then
    [ -f "$conf_dir/mini.overrides" ] || die "${conf_dir#"$recipe_dir"/}/mini.overrides is missing: this recipe \
has no cpu size; pass --size paper"
    lines=$("$python" "$repo/recipes/common/row_overrides.py" "$conf_dir/mini.overrides" "$config_file")
    [ -z "$lines" ] || mapfile -t overrides <<< "$lines"
  fi
  if [ -n "$row_overrides" ]; then
    lines=$("$python" "$repo/recipes/common/row_overrides.py" "$row_overrides" "$config_file")
    [ -z "$lines" ] || mapfile -t -O ${#overrides[@]} overrides <<< "$lines"
  fi
  if declare -F recipe_run_setup > /dev/null; then recipe_run_setup; fi
  overrides+=(${recipe_overrides[@]+"${recipe_overrides[@]}"} "train.threads=$threads" "train.seed=$seed"
              ${user_overrides[@]+"${user_overrides[@]}"})
  build_train_command
  if $print_train; then shell_words "OMP_NUM_THREADS=$threads" "${train_command[@]}"; exit 0; fi
  cd "$repo"
  export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
  # shellcheck disable=SC2086  # a list of module names
  [ -z "$python_modules" ] || need_modules "$python_modules_install" $python_modules
  for (( i = stage; i <= stop_stage; i++ )); do
    "stage_${stage_names[$i]}"
  done
  local elapsed=$(( SECONDS - start_time ))
  echo "run.sh: stages $stage-$stop_stage done in $(( elapsed / 60 )) min $(( elapsed % 60 )) s"
}
