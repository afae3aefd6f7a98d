"""Lines of handwriting as quantized gray-level images, their batching, and the `.npz` line-corpus format.

A line is a `(height, width)` array of gray *levels* in `[0, levels)`, level 0 being the background and
`levels - 1` the darkest ink (ScribbleLens §IV-B of Łańcucki et al. 2020 scales lines to 32 px height).
Width is the time axis: batches pad it on the right with background and carry a column mask.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from seqvq.errors import UserError


@dataclass
class LineSample:
    """One line: `image` (H, W) int64 levels, its transcript (may be empty) and a name for error messages."""

    image: torch.Tensor
    text: str
    name: str


@dataclass
class LineBatch:
    """A padded batch: `images` (B, H, W) int64, `mask` (B, W) bool (True = valid column), `widths` (B,)."""

    images: torch.Tensor
    mask: torch.Tensor
    widths: torch.Tensor
    texts: list[str]
    names: list[str]

    def to(self, device) -> "LineBatch":
        return LineBatch(self.images.to(device), self.mask.to(device), self.widths.to(device),
                         self.texts, self.names)


def to_gray(image: Image.Image) -> Image.Image:
    """8-bit grayscale (PIL's ITU-R 601 luma): transparency is flattened onto white paper first; 16-bit gray
    (PIL modes I;16* and I, as 16-bit PNGs open) is scaled from 0..65535, float gray (F) from 0..1."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        scale = {"I": 255.0 / 65535.0, "F": 255.0}.get(image.mode, 255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("L")
    return image.convert("L")


def resize_to_height(image: Image.Image, height: int) -> Image.Image:
    """Grayscale `image` (:func:`to_gray`) scaled to `height` pixels with its aspect ratio kept (width >= 1)."""
    gray = to_gray(image)
    width = max(1, round(gray.width * height / gray.height))
    return gray.resize((width, height), Image.BICUBIC)


def quantize_ink(gray: np.ndarray, levels: int, ink_is_dark: bool = True) -> np.ndarray:
    """Map 8-bit gray values to `levels` equal-width bins, level 0 = background (paper), top level = ink."""
    if levels < 2 or levels > 256:
        raise ValueError(f"levels must be in [2, 256], got {levels}")
    ink = 255 - gray.astype(np.int64) if ink_is_dark else gray.astype(np.int64)
    return (ink * levels // 256).astype(np.uint8)


def image_to_levels(image: Image.Image, height: int, levels: int, ink_is_dark: bool = True) -> np.ndarray:
    """A line image of any size and mode -> `(height, W)` int64 levels: gray, scaled to `height`, quantized."""
    return quantize_ink(np.asarray(resize_to_height(image, height)), levels, ink_is_dark).astype(np.int64)


def collate_lines(samples: list[LineSample]) -> LineBatch:
    """Pad lines on the right with background (level 0) to the widest line of the batch."""
    heights = {s.image.shape[0] for s in samples}
    if len(heights) != 1:
        raise ValueError(f"lines in a batch must share one height, got {sorted(heights)}")
    widths = torch.tensor([s.image.shape[1] for s in samples], dtype=torch.long)
    images = torch.zeros(len(samples), heights.pop(), int(widths.max()), dtype=torch.long)
    for row, sample in enumerate(samples):
        images[row, :, : sample.image.shape[1]] = sample.image
    mask = torch.arange(images.shape[2])[None, :] < widths[:, None]
    return LineBatch(images, mask, widths, [s.text for s in samples], [s.name for s in samples])


def save_line_corpus(path: str, lines: list[np.ndarray], texts: list[str], levels: int, **extra) -> None:
    """Write lines (each (H, W) uint8 levels) to `path` (.npz), atomically: temp file then os.replace."""
    widths = np.array([line.shape[1] for line in lines], dtype=np.int64)
    pixels = np.concatenate(lines, axis=1).astype(np.uint8)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as tmp:
            np.savez_compressed(tmp, pixels=pixels, widths=widths, texts=np.array(texts, dtype=str),
                                levels=np.int64(levels), **extra)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise


class LineCorpus(Dataset):
    """Lines saved by `save_line_corpus` (the built `--mini` corpus), all held in memory."""

    def __init__(self, path: str):
        try:
            with np.load(path, allow_pickle=False) as data:
                pixels, widths = data["pixels"], data["widths"]
                self.texts = [str(t) for t in data["texts"]]
                self.levels = int(data["levels"])
        except (OSError, KeyError, ValueError) as err:
            raise UserError(f"{path}: not a line corpus written by save_line_corpus ({err}); "
                             f"rebuild it with data_prep/make_mini_handwriting.py") from None
        if int(widths.sum()) != pixels.shape[1] or len(widths) != len(self.texts):
            raise UserError(f"{path}: widths do not add up to the stored pixels; rebuild the corpus")
        self.path = path
        self.height = pixels.shape[0]
        self.offsets = np.concatenate([[0], np.cumsum(widths)])
        self.pixels = torch.from_numpy(pixels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> LineSample:
        start, end = self.offsets[index], self.offsets[index + 1]
        return LineSample(self.pixels[:, start:end], self.texts[index], f"{self.path}#{index}")
