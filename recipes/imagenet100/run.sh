#!/usr/bin/env bash
# ImageNet100 classification recipe (Huh et al. 2023 §5.1): its defaults, --model, data and evaluation stages on
# the recipe driver (recipes/common/driver.sh). recipes/imagenet100/run.sh --help lists its options.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/driver.sh"

recipe_about="ImageNet100 classification with a VQ layer (Huh et al. 2023 §5.1, Table 2): trains ONE configuration
(a model and a Table 2 row) and evaluates it on the validation split (top-1 accuracy, code perplexity).

  recipes/imagenet100/run.sh --data DIR --model resnet18 --config all   # DIR/train/<class>/*.JPEG, DIR/val/...
  recipes/imagenet100/run.sh --mini --model resnet18 --config all       # the built MNIST digit set, minutes

--config: novq none affine sync alternating replace all, and for resnet18 bn_reestimation and the modern_* rows
(conf/<model>/<config>.yaml; README.md). The run goes to EXP/<model>/<config>."
config=all model=resnet18
option --mini flag "the built MNIST digit set, data/mini_digits"
option --data path:DIR "DIR/train/<class>/ and DIR/val/<class>/ image folders"
option --config text:NAME "the row to train: conf/<model>/NAME.yaml"
option --model choice:resnet18\|alexnet\|vit_tiny "the network (conf/<model>/)"
stage data "--mini: build data/mini_digits"
stage train
stage evaluate "top-1 accuracy and code perplexity on the validation split"

recipe_setup() {
  mini_data=$repo/data/mini_digits conf_dir=$recipe_dir/conf/$model run_prefix=$model/
  if ! $mini && { [ ! -d "$data/train" ] || [ ! -d "$data/val" ]; }; then
    die "$data needs train/<class>/ and val/<class>/ image folders"
  fi
}
recipe_run_setup() { recipe_overrides=("data.root=$data"); }

stage_data() {
  if ! $mini; then return; fi
  if [ -d "$data/train" ] && [ -d "$data/val" ]; then
    echo "stage data: $data already built"
  else
    echo "stage data: building the mini digit set in $data"
    "$python" data_prep/make_mini_digits.py --out "$data"
  fi
}

stage_evaluate() {
  echo "stage evaluate: $run"
  seqvq_evaluate "$exp/$run/checkpoints/last.pt" "$data" --out "$exp/$run/eval"
}

driver_main "$@"
