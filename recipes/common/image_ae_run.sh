# The data and evaluation stages shared by the image-autoencoder recipes (recipes/cifar10, recipes/vqvae), sourced
# by their run.sh after recipes/common/driver.sh and their defaults (and cifar10's --bottleneck option).
mini_data=$repo/data/mini_images
option --mini flag "the built set of 32x32 photo crops, data/mini_images"
option --data path:CIFAR "cifar-10-python.tar.gz or cifar-10-batches-py/, read in place"
stage data "--mini: build data/mini_images"
stage train
stage evaluate "the test split (Polyak weights): the recipe's line of the table"

recipe_setup() {
  if ! $mini; then
    [ -e "$data" ] || die "$data: no such file or folder (cifar-10-python.tar.gz)"
  fi
  if [ -n "${bottleneck:-}" ]; then exp_suffix=_$bottleneck; fi
}
recipe_run_setup() {
  if [ -n "${bottleneck:-}" ]; then  # G codebooks x K codes
    recipe_overrides=("model.num_codebooks=${bottleneck%x*}" "model.quantizer.codebook_size=${bottleneck#*x}")
  fi
  recipe_overrides+=("data.corpus=$data")
}

stage_data() {
  if ! $mini; then return; fi
  if [ -f "$data/test_batch" ]; then
    echo "stage data: $data already built"
  else
    echo "stage data: building the mini image set in $data"
    "$python" data_prep/make_mini_images.py --out "$data"
  fi
}

stage_evaluate() {
  echo "stage evaluate: $run on the test split of $data"
  seqvq_evaluate "$exp/$run/checkpoints/last.pt" "$data" --out "$exp/$run/eval" > /dev/null
  "$python" recipes/common/table.py "$recipe_name" "$exp" --rows "$run"
}
