#!/usr/bin/env bash
# Table 2 of Huh et al. 2023 (classification: top-1 accuracy and code perplexity per remedy) on ImageNet100
# (--data DIR) or the built digit set (--mini): prepares the data once, trains and evaluates every (model, row)
# (run.sh --model MODEL --config ROW --seed K) and prints the ablation as markdown, each figure the mean ± sample
# standard deviation over the row's evaluated seeds, with their count.
#
#   bash recipes/imagenet100/table2_huh.sh --mini | --data DIR [--groups "resnet18 alexnet vit_tiny"]
#        [--rows "novq none affine sync alternating replace all"] [--seeds N] [--jobs 2] [--table NAME]
#   bash recipes/imagenet100/table2_huh.sh --table-only --exp DIR [--groups "..."] [--rows "..."]
#
# --groups: the models (run.sh --model), the runs in EXP/<model>/<row>. --table NAME also writes the table to
# EXP/NAME.md (e.g. --table modern for the modern-remedies rows, README.md); without it the table is printed only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/table_driver.sh"

rows="novq none affine sync alternating replace all"
group_option=--model groups=resnet18
table_main "$@"
