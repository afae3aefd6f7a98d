#!/usr/bin/env bash
# Discrete-unit recipe: features -> k-means units -> dedup + sentencepiece -> a CTC phone recognizer on the tokens
# -> PER, on the recipe driver (recipes/common/driver.sh). bash recipes/units/run.sh --help lists the options.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/driver.sh"

recipe_about="Discrete speech units (ESPnet asr2 / SpeechBrain DiscreteSSL style) on the speech recipe's corpus:
features of one layer (log-mel frames, or a BiLSTM layer of a speech_ctc checkpoint such as recipes/wsj's
no_bottleneck model: no SSL checkpoint can be downloaded here) -> K k-means units (seqvq.units.KMeansTokenizer)
-> de-duplicated unit strings -> sentencepiece BPE -> the CTC recognizer on the tokens (speech_ctc with
model.input_tokens) -> PER. Trains ONE row (--units-k, --layer); recipes/units/table.sh trains them all.

  bash recipes/units/run.sh --mini --units-k 100                 # log-mel units of the built corpus
  bash recipes/units/run.sh --mini --units-k 500 --encoder exp/wsj_mini/no_bottleneck/checkpoints/last.pt --layer 2

Stage wsj runs recipes/wsj/run.sh up to its targets (the corpus, fbank features, phone targets, which it reuses
when built). Each later stage writes a new folder and refuses an existing one (--force rebuilds it); the token
stream's bits per second go to EXP/<features>/k<K>/tokens/bitrate.json (k<K>_seed<N> for --seed N > 0: each
seed fits its own units)."
config=units_ctc threads=$(nproc)
units_k=100 encoder=none layer=-1 vocab_size=0 kmeans_passes=10
python_modules="kaldiio sentencepiece" python_modules_install="pip install -c constraints.txt -e '.[speech]'"
option --mini flag "the corpus recipes/wsj/run.sh --mini builds (data/wsj_mini; its features exp/wsj_mini/feats)"
option --data path:DIR "Kaldi data folders DIR/{train_si284,test_dev93,test_eval92} (see recipes/wsj/run.sh)"
option --threads count:N "CPU threads of each seqvq process"
option --units-k count:K "k-means units (the rows: 100, 500, 2000)"
option --encoder text:CHECKPOINT "none: log-mel frames; else a speech_ctc checkpoint whose encoder layer --layer \
gives the features (e.g. recipes/wsj's no_bottleneck model)"
option --layer text:L "the encoder layer: 0 the front end, 1.. the BiLSTM layers, -1 the last"
option --vocab-size int:V "sentencepiece pieces over the unit strings (0: 2 x K)"
option --kmeans-passes count:N "Lloyd passes of the k-means fit"
stage wsj "recipes/wsj/run.sh up to its targets stage: corpus, fbank features, phone targets"
stage features "the layer's features of every split under EXP/<features> (log-mel, or <checkpoint name>_layerL)"
stage kmeans "K units fitted from the stream of training features: EXP/<features>/k<K>/kmeans.pt"
stage tokens "dedup + sentencepiece token ids as features, phone targets, identity CMVN, bitrate.json"
stage train
stage evaluate "greedy CTC on dev and test: PER, bits per second of the token stream"

recipe_setup() {
  wsj_args=()
  if $mini; then wsj_args=(--mini) mini_data=$repo/data/wsj_mini; else wsj_args=(--data "$data"); fi
  [ "$vocab_size" != 0 ] || vocab_size=$(( 2 * units_k ))
  if [ "$encoder" = none ]; then feature_name=logmel; else
    encoder=$(user_path "$encoder")
    feature_name=$(basename "$(dirname "$(dirname "$encoder")")")_layer$layer
  fi
  run_suffix=_${feature_name}_k$units_k
}
recipe_run_setup() {
  wsj_feats=$(bash "$repo/recipes/wsj/run.sh" "${wsj_args[@]}" --print-exp)/feats
  # each seed fits its own k-means and sentencepiece model: a seed is the whole pipeline's, not the CTC model's alone
  units_dir=$exp/$feature_name/k$units_k
  if [ "$seed" != 0 ]; then units_dir=${units_dir}_seed$seed; fi
  features=$exp/$feature_name tokens=$units_dir/tokens
  recipe_overrides=("data.train=$tokens/train" "data.dev=$tokens/dev" "data.cmvn=$tokens/train/cmvn.ark"
                    "model.input_tokens=$vocab_size")
}

force_flag() { if $force; then echo --force; fi; }

stage_wsj() {
  bash "$repo/recipes/wsj/run.sh" "${wsj_args[@]}" --threads "$threads" --stop-stage targets
}

stage_features() {
  OMP_NUM_THREADS=$threads "$python" data_prep/make_units.py features --encoder "$encoder" --layer "$layer" \
    --split "train=$wsj_feats/train" --split "dev=$wsj_feats/dev" --split "test=$wsj_feats/test" --out "$features" \
    $(force_flag)
}

stage_kmeans() {
  mkdir -p "$units_dir"
  OMP_NUM_THREADS=$threads "$python" data_prep/make_units.py kmeans --features "$features/train" \
    --units "$units_k" --passes "$kmeans_passes" --seed "$seed" --out "$units_dir/kmeans.pt" $(force_flag)
}

stage_tokens() {
  OMP_NUM_THREADS=$threads "$python" data_prep/make_units.py tokens --kmeans "$units_dir/kmeans.pt" \
    --features "$features" --targets "$wsj_feats" --vocab-size "$vocab_size" --out "$tokens" $(force_flag)
}

stage_evaluate() {
  for set in dev test; do
    seqvq_evaluate "$exp/$run/checkpoints/last.pt" "$tokens/$set" --out "$exp/$run/decode_$set" > /dev/null
    "$python" - "$exp/$run/decode_$set/figures.json" "$tokens/bitrate.json" "$run" "$set" <<'PY'
import json, sys
f, rates = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))[sys.argv[4]]
streams = " | ".join(f"{name} {rates[name]['entropy_bps']:.0f} b/s ({rates[name]['nominal_bps']:.0f} nominal)"
                     for name in ("frames", "dedup", "sentencepiece"))
print(f"{sys.argv[3]} ({sys.argv[4]}, step {f['step']}): PER {f['per']:.1f}% | {streams}")
PY
  done
  "$python" - "$tokens/bitrate.json" "$exp/$run/token_rates.json" <<'PY'
import json, sys
dev = json.load(open(sys.argv[1]))["dev"]
rates = {f"{name}_bps": dev[name]["entropy_bps"] for name in ("frames", "dedup", "sentencepiece")}
rates["sentencepiece_tokens_per_second"] = dev["sentencepiece"]["tokens_per_second"]
json.dump(rates, open(sys.argv[2], "w"), indent=1)
PY
}

driver_main "$@"
