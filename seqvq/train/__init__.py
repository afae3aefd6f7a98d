"""seqvq.train: the trainer shared by the recipes (see seqvq/train/trainer.py for the contract)."""
from seqvq.train.checkpoint import load_checkpoint
from seqvq.train.config import TrainConfig, apply_overrides, load_config
from seqvq.train.logs import plot_metrics, read_metrics
from seqvq.train.trainer import Trainer, seed_everything
from seqvq.train.types import StepOutput, TaskBundle

__all__ = ["Trainer", "TrainConfig", "StepOutput", "TaskBundle", "load_config", "apply_overrides",
           "load_checkpoint", "plot_metrics", "read_metrics", "seed_everything"]
