"""Whether a run directory's checkpoint belongs to the run ``seqvq train`` is asked to train, so that it resumes
only its own run: the same settings (the run config less what may change between the legs of one run:
:data:`MAY_CHANGE`) on the same data (the fingerprint of its files, :mod:`seqvq.train.stamps`), both recorded in
every checkpoint."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from seqvq.train.config import TrainConfig
from seqvq.train.stamps import files_under, fingerprint, fingerprint_change, record_changes, summary

# More steps, other logging, evaluation and checkpoint intervals, threads, workers, device, caching, another
# location: the same run, resumed.
MAY_CHANGE = ("exp_dir", "train.threads", "train.steps", "train.eval_every", "train.log_every",
              "train.checkpoint_every", "train.keep_checkpoints", "train.num_workers", "train.device",
              "data.cache_train")


def run_settings(config: dict) -> dict:
    """The settings that make a run: the run config less :data:`MAY_CHANGE`, its ``train:`` section with every
    default filled in."""
    settings = copy.deepcopy(config)
    settings["train"] = dataclasses.asdict(TrainConfig.from_dict(settings.get("train")))
    for key in MAY_CHANGE:
        *parents, name = key.split(".")
        section = settings
        for parent in parents:
            section = section.get(parent) if isinstance(section, dict) else None
        if isinstance(section, dict):
            section.pop(name, None)
    return settings


def data_fingerprint(config: dict, data_files: list[str] | None = None) -> dict:
    """The fingerprint of ``data_files``, by default of every file under the paths named in the config's
    ``data:`` section (the run's own directory left out)."""
    if data_files is None:
        data = config.get("data") or {}
        paths = [value for value in data.values() if isinstance(value, str) and Path(value).exists()]
        skip = [config["exp_dir"]] if config.get("exp_dir") else []
        data_files = [file for path in paths for file in files_under(path, skip)]
    return fingerprint(data_files)


def settings_conflict(checkpoint: dict, config: dict) -> str | None:
    """How ``config`` differs from the settings the checkpoint's run was trained with (None: it does not)."""
    changes = record_changes(run_settings(checkpoint.get("config") or {}), run_settings(config))
    return summary(changes) if changes else None


def data_conflict(checkpoint: dict, data: dict) -> str | None:
    """How the data of fingerprint ``data`` differs from the data the checkpoint's run was trained on (None: it
    does not)."""
    recorded = checkpoint.get("data_fingerprint")
    if recorded is None:
        return "the checkpoint holds no record of its data (written by an older seqvq)"
    return fingerprint_change(recorded, data)
