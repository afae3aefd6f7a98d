"""Task `maskgit`: MaskGIT (Chang et al. 2022) on the code maps of a frozen VQ-VAE, the generation experiment of
Huh et al. 2023 (Fig. 4, Table 9), for the shared trainer.

Run config keys read here (besides `train:`; declared by `MaskGITTask`, checked before anything runs):

    data:   corpus: the image set (as the `vqvae` task's), tokenizer: the checkpoint of a trained `vqvae` run (its
            Polyak weights, frozen), max_train_images (null = all)
    model:  MaskGITTransformer keywords less those the tokenizer gives (codebook_size, num_tokens): dim, depth,
            heads, mlp_ratio, dropout
    eval:   batch_size, max_images (null = the whole test split), samples (generated images of the evaluation),
            training_samples (of the evaluations logged during training), decode_steps, temperature (Chang §3.2),
            classifier_steps and classifier_seed (the feature classifier of the FD)

The training set is the tokenizer's code maps of the training images; a step's loss is the masked-token NLL of
Chang §3.1 with the masks drawn by the collate function from the trainer's seeded generator (exact on resume).

Evaluation, in the feature space of a small classifier trained (seeded) to tell the training images' labels apart
(:mod:`seqvq.metrics.frechet`; on the built set, which photo a crop comes from): ``rfd``, the Fréchet distance of
the test images' reconstructions to the test images; ``fd``, of ``samples`` generated images to the training
images; ``fd_test``, of the test images to the training images (what a generator of held-out-like images
scores); ``nll``, the masked-token NLL (nats) of the test images' codes under fixed seeded masks; the test codes'
``code_perplexity`` and ``codes_used`` and the samples' (``sample_``...). ``fid``/``rfid`` too when torchvision's
Inception weights are on the machine. ``seqvq evaluate`` also writes ``samples.png`` (a grid of samples) and
``curves.json``/``curves.png``: rFD against the tokenizer's training steps (its kept step checkpoints) and FD
against the transformer's (the evaluations logged during its training).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from seqvq.data.cifar import CifarImages
from seqvq.errors import UserError
from seqvq.metrics.bits import code_perplexity
from seqvq.metrics.frechet import (features_of, frechet_distance_of, inception_features,
                                   train_feature_classifier)
from seqvq.models.maskgit import MaskGITTransformer, random_mask
from seqvq.options import Section
from seqvq.tasks.base import TRAIN, Task
from seqvq.tasks.image_ae import ImageEval
from seqvq.tasks.vqvae import VQVAETask
from seqvq.train.checkpoint import load_checkpoint, read_checkpoint
from seqvq.train.logs import atomic_write_text, read_metrics
from seqvq.train.types import StepOutput


@dataclass
class MaskGITData:
    """The ``data:`` section."""

    corpus: str | None = None  # the image set (CIFAR-10 layout, as the vqvae task's data.corpus)
    tokenizer: str | None = None  # the checkpoint of a trained vqvae run
    max_train_images: int | None = None  # None = all


@dataclass
class MaskGITEval(ImageEval):
    """The ``eval:`` section: the image tasks' (``batch_size``, ``max_images``) and the sampling's."""

    samples: int = 1000
    training_samples: int = 200
    decode_steps: int = 8
    temperature: float = 4.5
    classifier_steps: int = 300
    classifier_seed: int = 0


class Tokenizer:
    """The frozen VQ-VAE of a `vqvae` checkpoint (its Polyak weights): uint8 images <-> code maps (B, H x W)."""

    def __init__(self, checkpoint: str | Path):
        state = read_checkpoint(checkpoint)
        config = state.get("config") or {}
        if config.get("task") != "vqvae":
            raise UserError(f"data.tokenizer: {checkpoint} is a checkpoint of task {config.get('task')!r}; give the "
                            f"last.pt of a trained vqvae run")
        model = VQVAETask(config).build_model()
        load_checkpoint(checkpoint, model, use_polyak=True)
        self.network = model.network.eval().requires_grad_(False)
        self.step = state.get("step")
        self.codebook_size = self.network.codebook_size
        with torch.no_grad():
            self.map_shape = tuple(self.network.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape[1:3])
        self.num_tokens = self.map_shape[0] * self.map_shape[1]

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """(N, H x W) codes of uint8 images (N, 3, 32, 32), row-major."""
        return torch.cat([self.network.quantizer(self.network.encode(images[start:start + batch_size])).codes
                          .flatten(1) for start in range(0, len(images), batch_size)])

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """uint8 images (N, 3, 32, 32) of code maps (N, H x W)."""
        images = []
        for start in range(0, len(codes), batch_size):
            chunk = codes[start:start + batch_size].view(-1, *self.map_shape)
            images.append(to_uint8(self.network.decode(self.network.quantizer.codes_to_vectors(chunk))))
        return torch.cat(images)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> uint8, rounded."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


@dataclass
class MaskedCodes:
    """A training batch: code maps (B, N) and the positions masked (B, N) bool."""

    codes: torch.Tensor
    mask: torch.Tensor


class CodeMaps(Dataset):
    """The code maps (N, H x W) of a split; items are (H x W,) code tensors."""

    def __init__(self, codes: torch.Tensor):
        self.codes = codes

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.codes[index]


def collate_masked(items: list[torch.Tensor], generator: torch.Generator | None = None) -> MaskedCodes:
    """Stack code maps and mask each by the cosine schedule (Chang §3.1), drawing from ``generator``."""
    codes = torch.stack(items)
    return MaskedCodes(codes, random_mask(len(codes), codes.shape[1], generator))


@dataclass
class EvaluationSet:
    """What the evaluation reads: the training images and labels (the feature classifier and the FD's reference)
    and the test images with their codes."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_codes: torch.Tensor


class MaskGITModel(nn.Module):
    """Wraps the transformer for the trainer: masked codes -> StepOutput (mean NLL of the masked codes, weight =
    their count)."""

    def __init__(self, transformer: MaskGITTransformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, batch: MaskedCodes) -> StepOutput:
        nll, count = self.transformer.masked_nll(batch.codes, batch.mask)
        return StepOutput(nll / count, {"nll": nll.detach() / count}, weight=count)


class MaskGITTask(Task):
    """MaskGIT's transformer on the code maps of the VQ-VAE ``data.tokenizer``."""

    name = "maskgit"
    data_options = MaskGITData
    eval_options = MaskGITEval

    def __init__(self, config: dict):
        super().__init__(config)
        for key in ("samples", "training_samples"):
            if getattr(self.eval, key) < 2:
                raise UserError(f"eval.{key}: {getattr(self.eval, key)}; the Fréchet distance needs at least 2 "
                                f"images, set it to 2 or more")
        if self.eval.decode_steps < 1:
            raise UserError(f"eval.decode_steps: {self.eval.decode_steps}; set it to 1 or more (Chang et al.: 8)")
        self.tokenizer: Tokenizer | None = None
        self.checkpoint: Path | None = None  # the checkpoint evaluated by evaluate_checkpoint
        self._features: tuple[str, object] | None = None  # (corpus, its classifier's feature function)

    @classmethod
    def model_section(cls) -> Section:
        return Section.of(MaskGITTransformer, skip=("codebook_size", "num_tokens"))

    def read_training_data(self) -> None:
        if not self.data.tokenizer:
            raise UserError("data.tokenizer: not set; give the last.pt of a trained vqvae run (recipes/maskgit/run.sh "
                            "sets it)")
        if not Path(self.data.tokenizer).is_file():
            raise UserError(f"data.tokenizer: {self.data.tokenizer}: no such checkpoint; train the autoencoder first "
                            f"(recipes/maskgit/run.sh --stage train)")
        self.tokenizer = Tokenizer(self.data.tokenizer)

    def restore(self, checkpoint: dict, path: str) -> None:
        self.checkpoint = Path(path)
        self.read_training_data()

    def build_network(self, options: dict) -> MaskGITModel:
        return MaskGITModel(MaskGITTransformer(self.tokenizer.codebook_size, self.tokenizer.num_tokens, **options))

    def _images(self, corpus: str, split: str, limit: int | None) -> CifarImages:
        try:
            return CifarImages(corpus, split, limit)
        except (OSError, ValueError) as error:
            raise UserError(str(error)) from None

    def open_split(self, split: str, model: nn.Module, path: str | None = None):
        corpus = path or self.data.corpus
        if not corpus:
            raise UserError("data.corpus: not set; pass --data CIFAR or --mini to the recipe, or set it")
        train = self._images(corpus, "train", self.data.max_train_images)
        if split == TRAIN:
            return CodeMaps(self.tokenizer.encode(train.images))
        test = self._images(corpus, "test", self.eval.max_images)
        self._train_classifier(corpus, train)
        return EvaluationSet(train.images, train.labels, test.images, self.tokenizer.encode(test.images))

    def _train_classifier(self, corpus: str, train: CifarImages) -> None:
        """The feature classifier of ``corpus``'s training images, trained once per task object."""
        if self._features is None or self._features[0] != corpus:
            classifier = train_feature_classifier(train.images, train.labels, self.eval.classifier_steps,
                                                  seed=self.eval.classifier_seed)
            self._features = (corpus, classifier.embed)

    def training_collate(self):
        return collate_masked

    # ---- evaluation -------------------------------------------------------------------------------------------
    def _generate(self, model: nn.Module, count: int) -> torch.Tensor:
        transformer = getattr(model, "module", model).transformer
        generator = torch.Generator().manual_seed(0)
        return torch.cat([transformer.generate(min(self.eval.batch_size, count - start), self.eval.decode_steps,
                                               self.eval.temperature, generator)
                          for start in range(0, count, self.eval.batch_size)])

    def _held_out_nll(self, model: nn.Module, codes: torch.Tensor) -> float:
        transformer = getattr(model, "module", model).transformer
        device = transformer.position_embedding.device
        generator, total, count = torch.Generator().manual_seed(0), 0.0, 0
        for start in range(0, len(codes), self.eval.batch_size):
            chunk = codes[start:start + self.eval.batch_size]
            nll, masked = transformer.masked_nll(chunk.to(device), random_mask(*chunk.shape, generator).to(device))
            total, count = total + float(nll), count + masked
        return total / count

    def _figures(self, model: nn.Module, data: EvaluationSet, samples: int) -> tuple[dict, torch.Tensor]:
        features = self._features[1]
        train_features = features_of(features, data.train_images)
        test_features = features_of(features, data.test_images)
        reconstructions = self.tokenizer.decode(data.test_codes)
        sample_codes = self._generate(model, samples)
        generated = self.tokenizer.decode(sample_codes)
        codebook_size = self.tokenizer.codebook_size
        figures = {
            "nll": self._held_out_nll(model, data.test_codes),
            "rfd": frechet_distance_of(features_of(features, reconstructions), test_features),
            "fd": frechet_distance_of(features_of(features, generated), train_features),
            "fd_test": frechet_distance_of(test_features, train_features),
            "code_perplexity": code_perplexity(data.test_codes, codebook_size),
            "codes_used": float(len(data.test_codes.unique())),
            "sample_code_perplexity": code_perplexity(sample_codes, codebook_size),
            "sample_codes_used": float(len(sample_codes.unique())),
            "samples": float(samples), "images": float(len(data.test_images)),
        }
        return figures, generated

    def evaluate_during_training(self, model: nn.Module, dataset: EvaluationSet) -> dict:
        return self._figures(model, dataset, self.eval.training_samples)[0]

    def evaluate(self, model: nn.Module, dataset: EvaluationSet, out_dir: Path | None) -> dict:
        figures, generated = self._figures(model, dataset, self.eval.samples)
        inception = inception_features()
        if inception is not None:
            real_train = features_of(inception, dataset.train_images)
            figures["fid"] = frechet_distance_of(features_of(inception, generated), real_train)
            figures["rfid"] = frechet_distance_of(
                features_of(inception, self.tokenizer.decode(dataset.test_codes)),
                features_of(inception, dataset.test_images))
        if out_dir is not None:
            write_grid(generated[:64], out_dir / "samples.png")
            self._write_curves(dataset, out_dir)
        return figures

    def _write_curves(self, data: EvaluationSet, out_dir: Path) -> None:
        """rFD against the tokenizer's training step (every step checkpoint beside it) and FD against the
        transformer's (its logged evaluations): curves.json and curves.png (Huh Fig. 4)."""
        test_features = features_of(self._features[1], data.test_images)
        rfd = []
        for path in sorted(Path(self.data.tokenizer).parent.glob("step_*.pt")):
            tokenizer = Tokenizer(path)
            reconstructions = tokenizer.decode(tokenizer.encode(data.test_images))
            rfd.append((tokenizer.step, frechet_distance_of(features_of(self._features[1], reconstructions),
                                                            test_features)))
        records = read_metrics(self.checkpoint.parent.parent) if self.checkpoint is not None else []
        fd = [(r["step"], r["fd"]) for r in records if r.get("split") == "dev" and "fd" in r]
        atomic_write_text(out_dir / "curves.json", json.dumps({"rfd": rfd, "fd": fd}) + "\n")
        plot_curves(rfd, fd, out_dir / "curves.png")


def write_grid(images: torch.Tensor, path: Path, columns: int = 8) -> None:
    """uint8 images (N, 3, H, W) as a PNG grid of ``columns`` columns, 2-pixel white gutters."""
    from PIL import Image

    count, _, height, width = images.shape
    rows = -(-count // columns)
    grid = torch.full((3, rows * (height + 2) + 2, columns * (width + 2) + 2), 255, dtype=torch.uint8)
    for index, image in enumerate(images):
        top, left = 2 + (index // columns) * (height + 2), 2 + (index % columns) * (width + 2)
        grid[:, top:top + height, left:left + width] = image
    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp)
    tmp.replace(path)


def plot_curves(rfd: list, fd: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, points, label, xlabel in ((axes[0], rfd, "rFD (own classifier)", "autoencoder training step"),
                                      (axes[1], fd, "FD (own classifier)", "transformer training step")):
        if points:
            ax.plot(*zip(*points), marker=".")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
