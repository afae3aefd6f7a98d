#!/usr/bin/env bash
# MaskGIT recipe (Huh et al. 2023 Fig. 4, Table 9): its defaults and its two training stages on the recipe driver
# (recipes/common/driver.sh), the image data stage of the autoencoder recipes (recipes/common/image_ae_run.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/driver.sh"

recipe_about="MaskGIT recipe (Huh et al. 2023 Fig. 4, Table 9): for ONE row (--config), stage A trains the VQ autoencoder
(32 channels, 8x8 code map, MSE only), stage B freezes it and trains MaskGIT's transformer on the code maps of the
training images, stage C generates images and evaluates: FD and rFD in the features of a small classifier trained on
the same set (not FID), masked-token NLL on the test codes, code usage, a sample grid and the rFD/FD curves.
recipes/maskgit/table9.sh trains every row.

  recipes/maskgit/run.sh --data cifar-10-python.tar.gz --config all   # the real set (or cifar-10-batches-py/)
  recipes/maskgit/run.sh --mini --config plain                        # built set of 32x32 photo crops, minutes"
config=all transformer=""
source "$recipe_dir/../common/image_ae_run.sh"  # --mini, --data, stage data, the data overrides of stage A
option --transformer text:OVERRIDES "dotted overrides for stage B's seqvq train, e.g. \"train.steps=200 model.depth=2\" \
(those after -- go to stage A)"
stage_names=() stage_helps=()  # image_ae_run.sh's stages, replaced: the evaluation follows a second training
stage data "--mini: build data/mini_images"
stage train "stage A: seqvq train conf/CONFIG.yaml (the autoencoder), with every override, into EXP/RUN; a rerun \
resumes it, or says it is trained"
stage transformer "stage B: seqvq train conf/transformer/maskgit.yaml on EXP/RUN's frozen autoencoder into \
EXP/RUN/transformer; a rerun resumes it"
stage evaluate "stage C: the autoencoder on the test split (EXP/RUN/eval), then the transformer's samples \
(EXP/RUN/transformer/eval: figures.json, samples.png, curves.png) and the row's line of the table"

stage_transformer() {
  local config_file=$conf_dir/transformer/maskgit.yaml lines run_dir=$exp/$run/transformer start=$SECONDS
  local overrides=() extra=()
  if [ "$size" = cpu ]; then
    lines=$("$python" recipes/common/row_overrides.py "$conf_dir/transformer/mini.overrides" "$config_file")
    [ -z "$lines" ] || mapfile -t overrides <<< "$lines"
  fi
  read -r -a extra <<< "$transformer"
  echo "stage transformer: $run, seed $seed, $size size, $threads thread(s) -> $run_dir"
  OMP_NUM_THREADS=$threads "$python" -m seqvq.cli train "$config_file" ${overrides[@]+"${overrides[@]}"} \
    "data.corpus=$data" "data.tokenizer=$exp/$run/checkpoints/last.pt" "train.threads=$threads" "train.seed=$seed" \
    ${extra[@]+"${extra[@]}"} --exp-dir "$run_dir" ${force_args[@]+"${force_args[@]}"}
  echo "$run transformer stage done in $(( SECONDS - start )) s"
}

stage_evaluate() {
  echo "stage evaluate: $run on the test split of $data"
  seqvq_evaluate "$exp/$run/checkpoints/last.pt" "$data" --out "$exp/$run/eval" > /dev/null
  seqvq_evaluate "$exp/$run/transformer/checkpoints/last.pt" "$data" --out "$exp/$run/transformer/eval" > /dev/null
  "$python" recipes/common/table.py "$recipe_name" "$exp" --rows "$run"
}

driver_main "$@"
