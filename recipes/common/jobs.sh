# Bounded background runs for the table scripts (sourced by recipes/wsj/table1.sh, recipes/scribblelens/table2.sh,
# recipes/imagenet100/table2_huh.sh after they set `jobs` and `exp`):
#   start_job LOG COMMAND...   runs COMMAND in the background with stdout and stderr to LOG, first waiting for a
#                              slot while `jobs` runs are going
#   wait_jobs                  waits for the runs still going
#   cpu_cores                  the cores this process may use (nproc, which would follow OMP_NUM_THREADS)
# A run that fails is reported on stderr (its log under EXP/logs says why); the table goes on with the others.
running=0
cpu_cores() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }
finish_one_job() {
  wait -n || echo "$(basename "$0"): a run failed; see $exp/logs" >&2
  running=$((running - 1))
}
start_job() {
  local log=$1; shift
  if (( running >= jobs )); then finish_one_job; fi
  "$@" > "$log" 2>&1 &
  running=$((running + 1))
}
wait_jobs() {
  while (( running > 0 )); do finish_one_job; done
}
