"""A toy task for the trainer tests: noisy linear regression with a dropout layer and a flagged codebook
parameter, plus stand-ins for seqvq.param_groups / reset_optimizer_state until the quantizer core lands."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import seqvq
from seqvq.options import Section
from seqvq.tasks import Task
from seqvq.train import StepOutput


class ToyRegression(nn.Module):
    def __init__(self, dim: int = 4):
        super().__init__()
        self.linear = nn.Linear(dim, 1)
        self.dropout = nn.Dropout(0.2)
        self.codebook = nn.Parameter(torch.zeros(3, dim))
        self.codebook._seqvq_codebook = True

    def forward(self, batch) -> StepOutput:
        x, y = batch["x"], batch["y"]
        mse = ((self.linear(self.dropout(x)).squeeze(-1) - y) ** 2).mean()
        pull = ((self.codebook - x.mean(0).detach()) ** 2).mean()
        return StepOutput(loss=mse + 0.1 * pull, metrics={"mse": mse, "pull": pull.item()}, weight=len(x))


def make_dataset(size: int = 13, dim: int = 4, seed: int = 123) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g)
    xs = torch.randn(size, dim, generator=g)
    return [{"x": x, "y": x @ w + 0.5} for x in xs]


def collate(items, generator):
    x = torch.stack([item["x"] for item in items])
    noise = 0.01 * torch.randn(x.shape, generator=generator)
    return {"x": x + noise, "y": torch.stack([item["y"] for item in items])}


def evaluate(model) -> dict[str, float]:
    data = collate(make_dataset(), torch.Generator().manual_seed(0))
    out = model(data)
    return {"mse": float(out.metrics["mse"]), "perplexity": float(torch.rand(()) + 1.0)}


@dataclass
class ToyData:
    """The toy task reads no data options: its data is :func:`make_dataset`."""


class ToyTask(Task):
    name = "toy"
    data_options = ToyData

    @classmethod
    def model_section(cls) -> Section:
        return Section.of(ToyRegression)

    def build_network(self, options: dict) -> ToyRegression:
        return ToyRegression(**options)

    def open_split(self, split: str, model: ToyRegression, path: str | None = None) -> list[dict]:
        return make_dataset(dim=model.linear.in_features)

    def training_collate(self):
        return collate

    def evaluate(self, model: ToyRegression, dataset, out_dir) -> dict[str, float]:
        return evaluate(model)


def stand_in_param_groups(model, lr, codebook_lr=None, weight_decay=0.0):
    codebook = [p for p in model.parameters() if getattr(p, "_seqvq_codebook", False)]
    rest = [p for p in model.parameters() if not getattr(p, "_seqvq_codebook", False)]
    return [{"params": rest, "lr": lr, "weight_decay": weight_decay},
            {"params": codebook, "lr": codebook_lr if codebook_lr is not None else lr, "weight_decay": 0.0}]


def stand_in_reset_optimizer_state(model, optimizer) -> None:
    return None


def install_stand_ins() -> None:
    """Used only where the quantizer core (seqvq.param_groups, ...) is not merged yet."""
    if not hasattr(seqvq, "param_groups"):
        seqvq.param_groups = stand_in_param_groups
    if not hasattr(seqvq, "reset_optimizer_state"):
        seqvq.reset_optimizer_state = stand_in_reset_optimizer_state
