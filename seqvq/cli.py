"""``seqvq`` command line: ``train`` a run config, ``evaluate`` a checkpoint on a data set, ``plot`` a run's log.

    seqvq train CONFIG.yaml [dotted.key=value ...] [--exp-dir DIR] [--force]
    seqvq evaluate CHECKPOINT DATA [dotted.key=value ...] [--out DIR] [--live-weights]
    seqvq plot EXP_DIR
    seqvq doctor RUN_DIR [--batches N]

A run config is a YAML mapping with ``task:`` (a name in :data:`seqvq.tasks.TASKS`), ``train:`` (the
:class:`~seqvq.train.TrainConfig` fields), optionally ``exp_dir:``, and the keys the task declares
(:meth:`seqvq.tasks.Task.schema`: model, data, quantizer...). Every key and value is checked before anything runs.
``train`` under torchrun trains with DDP; it resumes the run in its directory only when that run has the same
settings (the run config, less more steps and other intervals: :data:`seqvq.train.resume.MAY_CHANGE`) and the same
data (a fingerprint of its files), and refuses another run's directory in one line unless ``--force``, which starts
over. ``doctor`` says why a run's bottleneck collapsed and the remedy as overrides (:mod:`seqvq.train.doctor`) and
writes RUN_DIR/doctor.png. ``evaluate`` needs only the checkpoint (it carries the run config and the task's evaluation state) and writes
``figures.json`` (and the task's files) into ``--out`` or a directory named after the full data path. Both run on
``train.threads`` torch threads when it is set.

A mistake in what the user gave (:class:`seqvq.UserError`: a config typo, a wrong type, a missing file, bad data)
prints one line, ``error: <file or key>: <what>; <what to do>``, and exits 1; ``--debug`` or ``SEQVQ_DEBUG=1``
shows the traceback instead. Any other exception is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

import torch
import yaml

from seqvq.errors import UserError
from seqvq.tasks import TASKS, get_task


def use_threads(threads: int | None) -> None:
    """``train.threads``: torch's CPU threads for training or evaluation (faiss follows torch's count)."""
    if threads:
        torch.set_num_threads(threads)


def _differs(last: Path, saved: dict, how: str, conflict: str | None, same: str, force: bool) -> bool:
    """Whether the run in ``last`` must start over: its recorded ``conflict`` with this run, refused in one line
    unless ``force``."""
    if conflict and not force:
        raise UserError(f"{last}: trained (step {saved['step']}) {how}: {conflict}; rerun with {same} to resume "
                        f"it, or pass --force to start over (its checkpoints and logs are deleted)")
    return conflict is not None


def _train(args) -> None:
    import torch.distributed as dist

    from seqvq.train import Trainer, TrainConfig, seed_everything
    from seqvq.train.checkpoint import read_checkpoint
    from seqvq.train.config import check_run_config, load_config_layers, merge_layers
    from seqvq.train.logs import atomic_write_text
    from seqvq.train.resume import data_conflict, data_fingerprint, settings_conflict
    from seqvq.train.warmup import quantized_figure, warn_if_never_quantized

    layers = load_config_layers(args.config, args.overrides)
    config = merge_layers(layers)
    if args.exp_dir:
        config["exp_dir"] = args.exp_dir
    if "task" not in config:
        raise UserError(f"{args.config}: no 'task:' key; set it to one of the registered tasks ({', '.join(TASKS)})")
    task = get_task(config["task"])
    config = check_run_config(config, task.schema(), layers)
    if not config.get("exp_dir"):
        raise UserError(f"{args.config}: no exp_dir; pass --exp-dir DIR or set exp_dir: in the config")
    train_config = TrainConfig.from_dict(config.get("train"))
    use_threads(train_config.threads)
    exp_dir = Path(config["exp_dir"])
    last = exp_dir / "checkpoints" / "last.pt"
    saved = read_checkpoint(last) if last.is_file() else None
    start_over = False
    if saved is not None:  # resume only this run: its settings, then (once the task has read it) its data
        saved["config"] = checkpoint_run_config(saved.get("config") or {})
        start_over = _differs(last, saved, "with other settings", settings_conflict(saved, config),
                              "the config it was trained with", args.force)
    seed_everything(train_config.seed)
    bundle = task(config).build_task()
    data = data_fingerprint(config, bundle.data_files)
    if saved is not None and not start_over:
        start_over = _differs(last, saved, "from other data", data_conflict(saved, data),
                              "the data it was trained on", args.force)
    if int(os.environ.get("RANK", "0")) == 0:
        warn_if_never_quantized(bundle.model, train_config.steps)
        exp_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(exp_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    trainer = Trainer(bundle.model, train_config, bundle.train_dataset, bundle.collate_fn, bundle.evaluate,
                      exp_dir=exp_dir, run_config=config, evaluation_state=bundle.evaluation_state,
                      data_fingerprint=data, start_over=start_over)
    figures = trainer.fit()
    if trainer.rank == 0 and figures:
        print(json.dumps({"step": trainer.step, **figures, **quantized_figure(trainer.model)}))
    if dist.is_initialized():
        # Free the DDP model (its reducer holds the process group) while every rank is still here, then leave
        # together: a rank that tore down after its peer had exited once hung in those destructors under torchrun.
        del trainer, bundle
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def checkpoint_run_config(config: dict) -> dict:
    """A checkpoint's run config in the keys of this version: ``threads`` (a key of the speech task's run configs
    before it became the run setting ``train.threads``) moves under ``train``."""
    if "threads" not in config:
        return config
    config = dict(config)
    config["train"] = {**(config.get("train") or {}), "threads": config.pop("threads")}
    return config


def _evaluate(args) -> None:
    from seqvq.train import TrainConfig
    from seqvq.train.checkpoint import evaluation_dir, read_checkpoint
    from seqvq.train.config import ConfigLayer, check_run_config, merge_layers, override_layer

    config = checkpoint_run_config(read_checkpoint(args.checkpoint).get("config") or {})
    if not config:
        raise UserError(f"{args.checkpoint}: the checkpoint holds no run config; evaluate a checkpoint written by "
                        f"`seqvq train`")
    if not Path(args.data).exists():
        raise UserError(f"{args.data}: no such data set; pass the directory (or corpus file) to evaluate on")
    overrides = [override_layer(item) for item in args.overrides]
    layers = [ConfigLayer(f"{args.checkpoint} (its run config)", config), *overrides]
    config = merge_layers(layers)
    task = get_task(config.get("task"))
    config = check_run_config(config, task.schema(), layers)
    use_threads(TrainConfig.from_dict(config.get("train")).threads)
    out_dir = Path(args.out) if args.out else evaluation_dir(args.checkpoint, args.data)
    print(json.dumps(task(config).evaluate_checkpoint(args.checkpoint, args.data, out_dir,
                                                      use_polyak=not args.live_weights)))


def _plot(args) -> None:
    from seqvq.train.logs import plot_metrics

    if not (Path(args.exp_dir) / "metrics.jsonl").is_file():
        raise UserError(f"{args.exp_dir}: no metrics.jsonl; pass the --exp-dir of a `seqvq train` run")
    for path in plot_metrics(args.exp_dir):
        print(path)


def _doctor(args) -> None:
    from seqvq.train.doctor import dashboard, doctor

    diagnosis = doctor(args.run_dir, batches=args.batches)
    print(diagnosis)
    print(f"dashboard: {dashboard(args.run_dir, diagnosis)}")


def debug_requested(flag: bool) -> bool:
    """``--debug``, or ``SEQVQ_DEBUG`` set to anything but empty or 0."""
    return flag or os.environ.get("SEQVQ_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="seqvq", description="Train, evaluate, plot and diagnose seqvq runs.",
                                     epilog=f"tasks (a run config's task:): {', '.join(TASKS)}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error in the input (also SEQVQ_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a run config (resumes from EXP_DIR/checkpoints/last.pt)",
                                epilog=f"tasks (a run config's task:): {', '.join(TASKS)}")
    train.add_argument("config")
    train.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.steps=200")
    train.add_argument("--exp-dir", help="output directory (default: exp_dir: in the config)")
    train.add_argument("--force", action="store_true",
                       help="start over when EXP_DIR holds a run of other settings or data (its checkpoints and "
                            "logs are deleted); without it such a run is refused")
    train.set_defaults(run=_train)
    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint on a data set")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("data")
    evaluate.add_argument("overrides", nargs="*", help="dotted.key=value applied to the checkpoint's config")
    evaluate.add_argument("--out", help="output directory (default: decode_<data name>_<hash of its full path> "
                                        "next to the run's checkpoints/)")
    evaluate.add_argument("--live-weights", action="store_true",
                          help="evaluate the parameters of the last step instead of their Polyak average "
                               "(train.polyak_decay) when the checkpoint holds one")
    evaluate.set_defaults(run=_evaluate)
    plot = commands.add_parser("plot", help="write EXP_DIR/plots/*.png from EXP_DIR/metrics.jsonl")
    plot.add_argument("exp_dir")
    plot.set_defaults(run=_plot)
    doctor = commands.add_parser("doctor", help="name why a run's bottleneck collapsed and the remedy; write "
                                                "RUN_DIR/doctor.png")
    doctor.add_argument("run_dir")
    doctor.add_argument("--batches", type=int, default=0,
                        help="also run N training batches of the run's data through its last checkpoint (default: "
                             "the figures train.doctor_every logged)")
    doctor.set_defaults(run=_doctor)
    for command in (train, evaluate, plot, doctor):
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the traceback of an error in the input (also SEQVQ_DEBUG=1)")
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except UserError as error:
        if debug_requested(args.debug):
            raise
        message = " ".join(str(error).split())  # one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as interrupt:  # Ctrl-C: where the run stopped (seqvq.errors.Interrupted), no traceback
        if debug_requested(args.debug):
            raise
        if int(os.environ.get("RANK", "0")) == 0:
            print(str(interrupt) or "interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
