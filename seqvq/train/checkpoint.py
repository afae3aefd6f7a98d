"""Atomic checkpoints (temp file in the same directory + os.replace), the RNG state they carry, and where
``seqvq evaluate`` writes a checkpoint's results on a data set."""
from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seqvq.errors import UserError
from seqvq.train.logs import user_temp_file

CHECKPOINT_NAME = re.compile(r"^step_(\d+)\.pt$")


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temp file next to ``path``, then rename over it: a crash never leaves a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = user_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_unfinished_saves(checkpoint_dir: str | Path) -> list[Path]:
    """Delete the temporary files of saves that never finished (:func:`atomic_save` interrupted by a kill that
    left no time to clean up, e.g. SIGKILL); returns them."""
    checkpoint_dir = Path(checkpoint_dir)
    unfinished = sorted(checkpoint_dir.glob(".*.tmp")) if checkpoint_dir.is_dir() else []
    for path in unfinished:
        path.unlink(missing_ok=True)
    return unfinished


def checkpoint_path(exp_dir: str | Path, step: int) -> Path:
    return Path(exp_dir) / "checkpoints" / f"step_{step:06d}.pt"


def prune_checkpoints(checkpoint_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` ``step_*.pt`` files (``keep=0`` keeps all); ``last.pt`` stays."""
    if keep <= 0:
        return
    found = [(int(m.group(1)), p) for p in Path(checkpoint_dir).iterdir() if (m := CHECKPOINT_NAME.match(p.name))]
    for _, path in sorted(found)[:-keep]:
        path.unlink()


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; pass EXP_DIR/checkpoints/last.pt (or a step_*.pt) of a "
                        f"`seqvq train` run")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, truncated, or holding objects a checkpoint never holds
        raise UserError(f"{path}: not a readable seqvq checkpoint ({type(error).__name__}); pass a .pt file "
                        f"written by `seqvq train`") from error
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise UserError(f"{path}: not a seqvq checkpoint (no model state); pass a .pt file written by `seqvq train`")
    return checkpoint


def evaluation_dir(checkpoint: str | Path, data: str | Path) -> Path:
    """Where ``seqvq evaluate CHECKPOINT DATA`` writes by default: ``decode_<data name>_<hash of the full data
    path>`` next to the run's ``checkpoints/`` folder (or next to the checkpoint file when it sits elsewhere), so
    data sets with the same folder name (``a/test``, ``b/test``) never overwrite each other's results."""
    checkpoint = Path(checkpoint).resolve()
    base = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    data = Path(data).resolve()
    digest = hashlib.sha1(str(data).encode()).hexdigest()[:8]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in data.name) or "data"
    return base / f"decode_{name}_{digest}"


def load_checkpoint(path: str | Path, model: nn.Module, use_polyak: bool = True) -> dict:
    """Load a trainer checkpoint into ``model`` for evaluation, with the Polyak-averaged parameters when the
    run kept them and ``use_polyak``. Returns the checkpoint dict (``config``, ``step``, ...)."""
    checkpoint = read_checkpoint(path)
    model.load_state_dict(checkpoint["model"])
    polyak = checkpoint.get("polyak")
    if use_polyak and polyak is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in polyak["shadow"]:
                    p.copy_(polyak["shadow"][name])
    return checkpoint


def rng_state() -> dict:
    """Python, numpy and torch (CPU and CUDA) RNG states, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
