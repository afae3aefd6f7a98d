# The table driver, sourced first thing by every recipe's table script (recipes/<corpus>/table*.sh). A table
# script's header comment (the lines after #!) is its --help; it then sets its defaults and ends with
# `table_main "$@"`:
#   rows            the table's rows in order, "ROW[:SEEDS] ..." (a row is a config of the recipe, conf/ROW.yaml)
#   row_option      a run.sh option whose value a row is instead of a config (recipes/units: --units-k); table.py
#                     then gets the rows' run folders
#   first_run_stage the stage each run starts at (default train); the stages before it run once, for every row
#   evaluated       the file, under a run's folder, that says the run is evaluated (default eval/figures.json)
#   jobs            runs at a time (default 2)
#   group_option    a run.sh option whose values each get every row (imagenet100: --model), given to the table
#   groups            script as --groups "A B" (default: groups), the runs then in EXP/GROUP/ (table.py --groups)
#   table_setup     optional function: adds table.py options to table_args once the options are read (the speech
#                   table's --suffix from --units)
# The driver owns the rest, once for every table:
#   - one option parser: --mini | --data PATH, --rows, --seeds N (the seeds of a row without :SEEDS), --jobs N,
#     --threads N, --exp DIR, --table NAME, --table-only, --force, -h/--help, -- overrides; any other option and its
#     value go to
#     run.sh (--size, --units, --bottleneck, ...), which checks them;
#   - the data stages once (run.sh up to the stage before `train`), then every run from `train` to the end, in
#     seed-major order (every row's seed 0, then every seed 1, ...: a partial table already has every row),
#     --jobs at a time, each on --threads threads (default cores / jobs; fixed per table: another count changes the
#     float sums);
#     seed k > 0 of a row is run.sh --seed k, in EXP/ROW_seedk;
#   - a run already evaluated is not retrained (delete its folder to redo it), so an interrupted table resumes;
#   - the table with recipes/common/table.py, with a note of the command, the wall time and the machine.
set -euo pipefail
script=$(basename "${BASH_SOURCE[1]}")
script_path=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)/$script
recipe_dir=$(dirname "$script_path")
recipe_name=$(basename "$recipe_dir")
repo=$(cd "$recipe_dir/../.." && pwd)
python=${PYTHON:-python3}
source "$repo/recipes/common/jobs.sh"
source "$repo/recipes/common/quote.sh"

rows="" row_option="" first_run_stage=train evaluated=eval/figures.json jobs=2 group_option="" groups=""
table_args=()

table_die() { echo "error: $script: $*" >&2; exit 1; }

table_help() {
  awk 'NR > 1 && !/^#/ { exit } NR > 1' "$script_path" | sed 's/^# \{0,1\}//'
  cat << EOF

Options (every table script; any other option and its value go to run.sh, e.g. --size cpu):
  --mini | --data PATH    the data set, as run.sh takes it
  --rows "ROW[:SEEDS] ..." the rows, in table order (default: "$(echo $rows)")
  --seeds N               the seeds of a row given without :SEEDS (default 1); seed k > 0 in EXP/ROW_seedk
EOF
  if [ -n "$group_option" ]; then
    printf '  --groups "A ..."        the values of run.sh %s, each with every row (default: %s)\n' "$group_option" \
      "$groups"
  fi
  cat << EOF
  --jobs N                runs at a time (default $jobs)
  --threads N             CPU threads of each run (default: cores / jobs)
  --exp DIR               the folder of the runs (default: run.sh's EXP for the data set)
  --table NAME            write the table to EXP/NAME.md (and .json, _curves.png where the table has curves)
  --table-only            tabulate the runs in EXP; prepare and train nothing
  --force                 passed to run.sh: rebuild changed outputs, restart runs of other settings
  -- key=value ...        overrides for every run's seqvq train
EOF
}

# the value of a run.sh option given to the table (run_option NAME DEFAULT)
run_option() {
  local i
  for (( i = 0; i < ${#run_args[@]}; i++ )); do
    if [ "${run_args[$i]}" = "$1" ]; then echo "${run_args[$((i + 1))]}"; return; fi
  done
  echo "$2"
}

table_main() {
  local command table_only=false rows_given=false seeds=1 exp="" table="" threads="" overrides=() run_args=()
  local data_args=() force_args=() group row entry seed max_seeds=1 run start stages first table_rows=""
  command=$(shell_words "$@")  # as typed, quoted where a word needs it (a --rows list)
  while [ $# -gt 0 ]; do
    case $1 in
      -h|--help) table_help; exit 0 ;;
      --mini) data_args=(--mini); shift ;;
      --table-only) table_only=true; shift ;;
      --force) force_args=(--force); shift ;;
      --) shift; overrides=("$@"); break ;;
      --*)
        [ $# -ge 2 ] || table_die "$1 needs a value (see --help)"
        case $1 in
          --data) data_args=(--data "$2") ;;
          --rows) rows=$2 rows_given=true ;;
          --seeds) seeds=$2 ;;
          --groups) [ -n "$group_option" ] || table_die "unknown option $1 (see --help)"; groups=$2 ;;
          --jobs) jobs=$2 ;;
          --threads) threads=$2 ;;
          --exp) exp=$(realpath -m -s -- "$2") ;;
          --table) table=$2 ;;
          *) run_args+=("$1" "$2") ;;
        esac
        shift 2 ;;
      *) table_die "unexpected argument $1 (see --help)" ;;
    esac
  done
  [[ $seeds =~ ^[1-9][0-9]*$ ]] || table_die "--seeds takes a count >= 1, got '$seeds'"
  [[ $jobs =~ ^[1-9][0-9]*$ ]] || table_die "--jobs takes a count >= 1, got '$jobs'"
  if [ -n "$threads" ]; then
    [[ $threads =~ ^[1-9][0-9]*$ ]] || table_die "--threads takes a count >= 1, got '$threads'"
  else
    threads=$(( $(cpu_cores) / jobs )); (( threads >= 1 )) || threads=1
  fi
  if [ -n "$table" ] && ! [[ $table =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]]; then
    table_die "--table takes a file name without a folder (EXP/NAME.md), got '$table'"
  fi
  if declare -F table_setup > /dev/null; then table_setup; fi
  [ -z "$table" ] || table_args+=(--name "$table")
  [ -z "$group_option" ] || table_args+=(--groups "$groups")
  read -r -a groups <<< "${groups:-_}"  # "_": no group option

  local -A run_dirs=()
  if $table_only; then
    [ -n "$exp" ] || table_die "--table-only needs --exp DIR"
    [ -d "$exp" ] || table_die "--table-only: no runs in $exp; give the --exp DIR of the trained rows"
    if ! $rows_given; then
      table_rows=""  # table.py: every row with an evaluated seed 0, with its evaluated seeds
    elif [ -z "$row_option" ]; then
      table_rows=$rows
    else  # run.sh names the rows' folders, from the data set's options too
      [ ${#data_args[@]} -gt 0 ] || table_die "--table-only --rows needs --mini or --data PATH too (run.sh names \
the runs of this table)"
      run_args=("${data_args[@]}" ${run_args[@]+"${run_args[@]}"} --exp "$exp")
      find_runs
    fi
    "$python" "$repo/recipes/common/table.py" "$recipe_name" "$exp" --rows "$table_rows" --seeds "$seeds" \
      ${table_args[@]+"${table_args[@]}"}
    return
  fi
  [ ${#data_args[@]} -gt 0 ] || table_die "give --mini or --data PATH (or --table-only --exp DIR)"
  run_args=("${data_args[@]}" ${run_args[@]+"${run_args[@]}"} ${force_args[@]+"${force_args[@]}"})
  exp=${exp:-$(bash "$recipe_dir/run.sh" "${run_args[@]}" --print-exp)}  # every run in the folder run.sh would use
  run_args+=(--exp "$exp")
  find_runs  # every run's folder first: a row without a config stops the table here, before any data is prepared
  mapfile -t stages < <(bash "$recipe_dir/run.sh" --print-stages)
  for first in "${!stages[@]}"; do [ "${stages[$first]}" != "$first_run_stage" ] || break; done

  start=$SECONDS
  if (( first > 0 )); then bash "$recipe_dir/run.sh" "${run_args[@]}" --stop-stage $(( first - 1 )); fi
  mkdir -p "$exp/logs"
  for (( seed = 0; seed < max_seeds; seed++ )); do
    for group in "${groups[@]}"; do
      for entry in $rows; do
        row=${entry%%:*}
        (( seed < $(row_seeds "$entry" "$seeds") )) || continue
        run=${run_dirs[$group/$row/$seed]}
        if [ -f "$run/$evaluated" ]; then echo "$script: ${run#"$exp"/} already evaluated"; continue; fi
        local log=$exp/logs/$(echo "${run#"$exp"/}" | tr / -).log
        echo "$script: training ${run#"$exp"/} (log: $log)"
        start_job "$log" bash "$recipe_dir/run.sh" "${run_args[@]}" $(group_args "$group") $(row_args "$row") \
          --seed "$seed" --threads "$threads" --stage "$first" -- ${overrides[@]+"${overrides[@]}"}
      done
    done
  done
  wait_jobs
  local minutes=$(( (SECONDS - start) / 60 ))
  "$python" "$repo/recipes/common/table.py" "$recipe_name" "$exp" --rows "$table_rows" --seeds "$seeds" \
    ${table_args[@]+"${table_args[@]}"} --note "Command: \`bash recipes/$recipe_name/$script $command\`; $minutes min \
wall time for the runs trained by this call; machine: $(cpu_cores) CPU cores ($(grep -m1 'model name' /proc/cpuinfo \
| cut -d: -f2 | sed 's/^ *//')), torch $("$python" -c 'import torch; print(torch.__version__)'), $jobs runs at a time \
with $threads thread(s) each."
  echo "$script: done in $minutes min"
}

# run_dirs[GROUP/ROW/SEED]: the folder of every run of the rows (run.sh --print-run); max_seeds: the most seeds of
# a row; table_rows: the rows for table.py (a table of row_option values: their folders, seed 0, with their seeds)
find_runs() {
  local entry group seed run_seeds run
  table_rows=""
  for entry in $rows; do
    run_seeds=$(row_seeds "$entry" "$seeds")
    (( run_seeds <= max_seeds )) || max_seeds=$run_seeds
    for group in "${groups[@]}"; do
      for (( seed = 0; seed < run_seeds; seed++ )); do
        run_dirs[$group/${entry%%:*}/$seed]=$(bash "$recipe_dir/run.sh" "${run_args[@]}" $(group_args "$group") \
          $(row_args "${entry%%:*}") --seed "$seed" --print-run) || exit 1
      done
    done
    if [ -z "$row_option" ]; then
      table_rows+="${table_rows:+ }$entry"
    else
      run=${run_dirs[${groups[0]}/${entry%%:*}/0]}
      table_rows+="${table_rows:+ }${run#"$exp"/}:$run_seeds"
    fi
  done
}
row_seeds() {  # row_seeds ROW[:SEEDS] DEFAULT
  if [[ $1 == *:* ]]; then echo "${1#*:}"; else echo "$2"; fi
}
row_args() {  # the run.sh options of ROW: its config, or its value of row_option
  if [ -n "$row_option" ]; then echo "$row_option $1"; else echo "--config $1"; fi
}
group_args() {  # the run.sh option of GROUP ("_": none)
  if [ "$1" != _ ]; then echo "$group_option $1"; fi
}
