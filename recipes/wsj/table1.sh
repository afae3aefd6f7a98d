#!/usr/bin/env bash
# Table I of Łańcucki et al. 2020 (Dev PER and code perplexity per VQ training variant), plus Huh et al. 2023's
# remedies as Huh configures them, on the built corpus (--mini) or real WSJ (--data DIR): prepares the data once,
# trains and evaluates every run (run.sh --config ROW --seed K), then writes EXP/table1.md (mean ± sd over seeds;
# Dev CER and WER instead of PER with --units chars|bpe), EXP/table1.json and EXP/table1_curves.png (dev PER and
# code perplexity vs step, every row, seed range shaded) with recipes/common/table.py.
#
#   bash recipes/wsj/table1.sh --mini [--jobs 2] [--rows "no_bottleneck:3 vanilla_vq ..."] [--table NAME]
#                              [--units chars|bpe ...] [-- train.steps=N ...]
#
# --table NAME writes EXP/NAME.md, .json, _curves.png instead of EXP/table1.* (e.g. for another set of rows).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/table_driver.sh"

# The EMA row is the discount 0.9 of the γ the paper searches for it (RESULTS.md: 12.65 vs 12.82 dev PER for 0.99
# over five seeds, and the paper's perplexity order); bn_ema (0.99) stays a config.
rows="no_bottleneck:3 vanilla_vq bn bn_codebook_lr bn_ema_decay09:3 bn_reestimation:3 bn_reestimation_codebook_lr:3
huh_all"
evaluated=decode_dev/figures.json
table_setup() {  # the run folders' suffix of the output units (run.sh names them so)
  case $(run_option --units phones) in
    chars) table_args+=(--suffix _chars) ;;
    bpe) table_args+=(--suffix "_bpe$(run_option --vocab-size 300)") ;;
  esac
}
table_main "$@"
