#!/usr/bin/env python
"""Check a handwriting corpus before training, with the reader training will use: every line of both splits is
decoded and converted (a folder of line images: see seqvq/data/image_folder.py), once every key of the config and
the overrides is checked (as `seqvq train` checks them); prints the split sizes, the lines
with transcripts and the converted widths. Reads only, writes nothing; a bad file gets a one-line error naming it.

    python data_prep/check_line_images.py CONFIG.yaml data.corpus=FOLDER [dotted.key=value ...]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from seqvq.tasks.base import EVAL, TRAIN  # noqa: E402
from seqvq.tasks.handwriting import HandwritingTask  # noqa: E402
from seqvq.train.config import check_run_config, load_config_layers, merge_layers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a handwriting run config (e.g. recipes/scribblelens/conf/bn.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. data.corpus=my_lines/")
    args = parser.parse_args()
    try:
        layers = load_config_layers(args.config, args.overrides)  # every key checked before any image is decoded
        config = check_run_config(merge_layers(layers), HandwritingTask.schema(), layers)
        corpus = config["data"]["corpus"]
        task = HandwritingTask(config)
        model = task.build_model()  # the line height and levels the model reads
        for split, default in ((TRAIN, "train"), (EVAL, "test")):
            lines = task.open_split(split, model)
            widths = [lines[index].image.shape[1] for index in range(len(lines))]
            with_text = sum(bool(lines[index].text) for index in range(len(lines)))
            print(f"{corpus}: {default} split: {len(lines)} lines ({with_text} with transcripts), "
                  f"{min(widths)}-{max(widths)} px wide at {lines[0].image.shape[0]} px high")
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
