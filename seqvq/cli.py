"""``seqvq`` command line: ``train`` a run config, ``evaluate`` a checkpoint on a data set, ``plot`` a run's log.

    seqvq train CONFIG.yaml [dotted.key=value ...] [--exp-dir DIR]
    seqvq evaluate CHECKPOINT DATA [dotted.key=value ...]
    seqvq plot EXP_DIR

A run config is a YAML mapping with ``task:`` (a name in :data:`seqvq.tasks.TASKS`), ``train:`` (the
:class:`~seqvq.train.TrainConfig` fields), optionally ``exp_dir:``, and whatever the task reads (model, data,
quantizer...). ``train`` under torchrun trains with DDP.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml


def _train(args) -> None:
    import torch.distributed as dist

    from seqvq.tasks import get_task
    from seqvq.train import Trainer, TrainConfig, load_config, seed_everything
    from seqvq.train.logs import atomic_write_text

    config = load_config(args.config, args.overrides)
    if args.exp_dir:
        config["exp_dir"] = args.exp_dir
    if not config.get("exp_dir"):
        sys.exit(f"{args.config}: no exp_dir; pass --exp-dir DIR or set exp_dir: in the config")
    if "task" not in config:
        sys.exit(f"{args.config}: no 'task:' key; set it to one of the registered tasks")
    train_config = TrainConfig.from_dict(config.get("train"))
    task = get_task(config["task"])
    seed_everything(train_config.seed)
    bundle = task.build_task(config)
    exp_dir = Path(config["exp_dir"])
    if int(os.environ.get("RANK", "0")) == 0:
        exp_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(exp_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    trainer = Trainer(bundle.model, train_config, bundle.train_dataset, bundle.collate_fn, bundle.evaluate,
                      exp_dir=exp_dir, run_config=config)
    figures = trainer.fit()
    if trainer.rank == 0 and figures:
        print(json.dumps({"step": trainer.step, **figures}))
    if dist.is_initialized():
        dist.destroy_process_group()


def _evaluate(args) -> None:
    from seqvq.tasks import get_task
    from seqvq.train.checkpoint import read_checkpoint
    from seqvq.train.config import apply_overrides

    config = read_checkpoint(args.checkpoint).get("config")
    if not config:
        sys.exit(f"{args.checkpoint}: the checkpoint holds no run config; it was not written by `seqvq train`")
    config = apply_overrides(config, args.overrides)
    result = get_task(config["task"]).evaluate_cli(args.checkpoint, args.data, config)
    if isinstance(result, dict):
        print(json.dumps(result))


def _plot(args) -> None:
    from seqvq.train.logs import plot_metrics

    for path in plot_metrics(args.exp_dir):
        print(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="seqvq", description="Train, evaluate and plot seqvq runs.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a run config (resumes from EXP_DIR/checkpoints/last.pt)")
    train.add_argument("config")
    train.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.steps=200")
    train.add_argument("--exp-dir", help="output directory (default: exp_dir: in the config)")
    train.set_defaults(run=_train)
    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint on a data set")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("data")
    evaluate.add_argument("overrides", nargs="*", help="dotted.key=value applied to the checkpoint's config")
    evaluate.set_defaults(run=_evaluate)
    plot = commands.add_parser("plot", help="write EXP_DIR/plots/*.png from EXP_DIR/metrics.jsonl")
    plot.add_argument("exp_dir")
    plot.set_defaults(run=_plot)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
