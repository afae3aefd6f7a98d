#!/usr/bin/env bash
# ScribbleLens recipe (Łańcucki et al. 2020 §IV-B): its defaults, data and evaluation stages on the recipe driver
# (recipes/common/driver.sh). recipes/scribblelens/run.sh --help lists its options.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/driver.sh"

recipe_about="ScribbleLens recipe (Łańcucki et al. 2020 §IV-B): trains ONE VQ autoencoder (one Table II row,
--config), evaluates it on the test split and prints its figures. recipes/scribblelens/table2.sh trains every row.

  recipes/scribblelens/run.sh --mini                                 # built MNIST-lines corpus, minutes
  recipes/scribblelens/run.sh --data scribblelens.corpus.v1.2.zip   # the real corpus, read in place (paper size)
  recipes/scribblelens/run.sh --data FOLDER                          # your own PNG/JPEG line images (cpu size)

A folder of line images takes FOLDER/transcripts.txt and FOLDER/train.txt + test.txt when present, else holds out
data.test_fraction (0.1) of the images (seqvq/data/image_folder.py)."
config=bn_reestimation_codebook_lr
option --mini flag "the built MNIST-lines corpus, data/mini_handwriting"
option --data path:CORPUS "the ScribbleLens zip (OpenSLR 84) or a folder of line images"
option --size choice:cpu\|paper "paper: the config as written; cpu: with the lines of conf/mini.overrides that \
apply to the row, the --mini model (default: paper for the ScribbleLens zip, cpu otherwise)"
stage data "--mini: build data/mini_handwriting; a folder: decode and count every line, writing nothing into it"
stage train
stage evaluate "Rec. BPD, code perplexity, uniform and unigram NELBO on the test split; reconstructions"

recipe_setup() {
  mini_data=$repo/data/mini_handwriting
  if ! $mini; then
    [ -e "$data" ] || die "$data: no such file or folder (the ScribbleLens zip, OpenSLR 84, or a folder of line \
images)"
    if [ ! -f "$data" ] || [ "${data%.zip}" = "$data" ]; then size=${size:-cpu}; fi
  fi
}
recipe_run_setup() { recipe_overrides=("data.corpus=$data"); }

stage_data() {
  if $mini; then
    if [ -f "$data/train.npz" ] && [ -f "$data/test.npz" ]; then
      echo "stage data: $data already built"
    else
      echo "stage data: building the mini corpus in $data"
      "$python" data_prep/make_mini_handwriting.py --out "$data"
    fi
  elif [ -d "$data" ]; then
    echo "stage data: checking $data (read only)"
    "$python" data_prep/check_line_images.py "$config_file" "${overrides[@]}"
  fi
}

stage_evaluate() {
  echo "stage evaluate: $run on the test split of $data"
  seqvq_evaluate "$exp/$run/checkpoints/last.pt" "$data" --out "$exp/$run/eval" > /dev/null
  "$python" - "$exp/$run/eval/figures.json" "$run" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
codes = ("pass-through: never quantized" if m.get("quantized") is False
         else f"perplexity {m['code_perplexity']:.1f} | codes used {m['codes_used']:.0f}")
print(f"{sys.argv[2]} (test, {m['lines']:.0f} lines): Rec. BPD {m['bpd']:.3f} | {codes} | uniform NELBO "
      f"{m['uniform_nelbo']:.3f} | unigram NELBO {m['unigram_nelbo']:.3f} bits | reconstructions: "
      f"{sys.argv[1].replace('figures.json', 'reconstructions.png')}")
PY
}

driver_main "$@"
