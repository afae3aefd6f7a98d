#!/usr/bin/env python
"""Record the doctor's test runs: short trainings of the VQ-VAE recipe's rows (recipes/vqvae/conf) on the built
mini image set, shrunk to seconds (16 channels, 128 codes, 200 steps), each with one config override that causes a
known failure, or none (healthy rows); ``train.doctor_every=25`` logs the bottleneck's state.  Of each run a tiny
copy is kept under tests/data/doctor/RUN/: metrics.jsonl (train and doctor records), config.yaml, cause.txt (the
true cause) and checkpoints/last.pt with the step, the run config and the quantizer's small buffers (no weights,
optimizer or reservoir contents).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python3 tests/data/doctor/record.py --data data/mini_images [--runs NAME ...]
    ... record.py --seed 2 --exp exp/doctor_heldout       # held-out runs at another seed (no tiny copies)
    ... record.py --remedy                                # each failure again with the remedy the doctor names

One run at a time, one thread, about 20 s each on a loaded 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from seqvq.train.doctor import doctor
from seqvq.train.logs import read_metrics

HERE = Path(__file__).resolve().parent
SHRINK = ["model.channels=16", "model.residual_blocks=1", "model.quantizer.codebook_size=128", "train.steps=200",
          "train.batch_size=32", "train.lr=1e-3", "train.warmup_steps=20", "train.log_every=10",
          "train.eval_every=1000000", "train.checkpoint_every=200", "train.threads=1", "train.doctor_every=25"]
REEST = "model.quantizer.reestimate={init_steps: 20, every: 20, steps: 100, reservoir_size: 4096}"

# name: (recipe row, overrides, the true cause)
RUNS = {
    "scale_small_codes": ("vqvae", ["model.quantizer.init_scale=0.05"], "collapse from scale mismatch"),
    "scale_large_codes": ("vqvae", ["model.quantizer.init_scale=20.0"], "collapse from scale mismatch"),
    "slow_codebook_lr": ("vqvae", ["train.codebook_lr=1e-6"], "codes not learned (codebook LR too slow)"),
    "slow_codebook_lr_seed1": ("vqvae", ["train.codebook_lr=1e-7", "train.seed=1"],
                               "codes not learned (codebook LR too slow)"),
    "no_commitment": ("vqvae", ["model.quantizer.beta=1.0", "train.lr=3e-3"], "encoder drift from the codes"),
    "kmeans_no_replacement": ("vqvae", ["model.quantizer.kmeans_init=true"], "dead codes growing"),
    "ema_decay_high": ("vqvae", ["model.quantizer.codebook_update=ema", "model.quantizer.ema_decay=0.9999"],
                       "EMA decay too high"),
    "warm_up_too_long": ("vqvae", ["model.quantizer.pre_norm=true", REEST, "model.quantizer.reestimate.init_steps=500"],
                         "warm-up longer than the run"),
    "reservoir_too_small": ("vqvae", ["model.quantizer.pre_norm=true", REEST,
                                      "model.quantizer.reestimate.reservoir_size=32"],
                            "re-estimation on a too small reservoir"),
    "reservoir_stale": ("vqvae", ["model.quantizer.pre_norm=true", REEST,
                                  "model.quantizer.reestimate.restart_reservoir=false"],
                        "re-estimation on a stale reservoir"),
    "healthy_l2_replace": ("l2_replace", [], "healthy"),
    "healthy_bn_reestimation": ("vqvae", ["model.quantizer.pre_norm=true", REEST], "healthy"),
    "healthy_full_set": ("affine_opt_replace_l2", [], "healthy"),
    "healthy_replace": ("replace", [], "healthy"),
    "healthy_bn_ema_replace": ("vqvae", ["model.quantizer.pre_norm=true", "model.quantizer.codebook_update=ema",
                                         "model.quantizer.replace_dead_after=20"], "healthy"),
}

SMALL_BUFFERS = ("codebook", "step", "replacement.last_used", "reestimation.reservoir.seen", "norm.running_mean",
                 "norm.running_var", "affine.scale", "affine.shift", "initialized")


def tiny_copy(exp: Path, out: Path, cause: str) -> None:
    """metrics.jsonl, config.yaml and a last.pt of the quantizer's small buffers, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(exp / "metrics.jsonl", out / "metrics.jsonl")
    shutil.copy(exp / "config.yaml", out / "config.yaml")
    state = torch.load(exp / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    model = {key: value.half() if value.is_floating_point() else value for key, value in state["model"].items()
             if ".quantizer." in key and key.endswith(SMALL_BUFFERS)}
    (out / "checkpoints").mkdir(exist_ok=True)
    torch.save({"step": state["step"], "config": state["config"], "model": model}, out / "checkpoints" / "last.pt")
    (out / "cause.txt").write_text(cause + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/mini_images")
    parser.add_argument("--exp", default="exp/doctor_runs")
    parser.add_argument("--runs", nargs="*", default=list(RUNS))
    parser.add_argument("--copy-only", action="store_true", help="only make the tiny copies of runs in --exp")
    parser.add_argument("--remedy", action="store_true",
                        help="train each run of --exp again with the remedy `seqvq doctor` names for it added, into "
                             "--exp/../doctor_remedied, and print the cause named before and after")
    parser.add_argument("--seed", type=int, help="train every run at this seed, into --exp only (held-out runs: no "
                                                 "tiny copies)")
    args = parser.parse_args()
    for name in args.runs:
        row, overrides, cause = RUNS[name]
        exp = Path(args.exp) / name
        if args.copy_only:
            tiny_copy(exp, HERE / name, cause)
            continue
        remedy = []
        if args.remedy:
            finding = doctor(exp).findings[0]
            remedy, exp = finding.overrides, Path(args.exp).parent / "doctor_remedied" / name
            if not remedy:
                continue
        command = [sys.executable, "-m", "seqvq.cli", "train", f"recipes/vqvae/conf/{row}.yaml",
                   f"data.corpus={args.data}", *SHRINK, *overrides, *remedy, "--exp-dir", str(exp)]
        if exp.exists():  # this script's own earlier recording of the run: trained again from scratch
            print(f"removing {exp}", flush=True)
            shutil.rmtree(exp)
        if args.seed is not None:
            command[-3:-3] = [f"train.seed={args.seed}"]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        if args.remedy:
            dev = [record for record in read_metrics(exp) if record["split"] == "dev"][-1]
            print(f"{name}: {finding.cause} -> with {' '.join(remedy)}: {doctor(exp).findings[0].cause}, dev MSE "
                  f"{dev['mse']:.4f}, {dev['codes_used']:.0f} codes used", flush=True)
            continue
        if args.seed is None:
            tiny_copy(exp, HERE / name, cause)
        last = [json.loads(line) for line in open(exp / "metrics.jsonl")][-1]
        print(name, {key: last.get(key) for key in ("codes_used", "perplexity", "used_code_motion",
                                                      "relative_error", "encoder_norm", "code_norm")}, flush=True)


if __name__ == "__main__":
    main()
