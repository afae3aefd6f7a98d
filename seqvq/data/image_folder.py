"""A folder of handwriting line images (PNG/JPEG, any size and mode) read as a line corpus, never written to.

Layout (every file but the images optional)::

    FOLDER/**/*.png|*.jpg|*.jpeg     one text line per image, in any subfolder; named by the path relative to FOLDER
    FOLDER/transcripts.txt           `NAME transcript words ...` per line (or data.transcripts: another file)
    FOLDER/train.txt, FOLDER/test.txt  split lists: one NAME per line (or data.train_list / data.test_list)

Without split lists, about a fraction ``test_fraction`` (default 0.1) of the images is the test split, chosen
deterministically from a hash of each name: an image is held out when its hash, read as a number in [0, 1), is
below the fraction (the image of the smallest hash when none is), so an image keeps its split when others are
added or the folder is copied elsewhere.
``test_fraction: 1`` makes every image a test line (to evaluate a model on a new folder).

Conversion, the same as the ScribbleLens reader (:func:`seqvq.data.lines.image_to_levels`): to 8-bit gray
(transparency flattened onto white paper, 16-bit images scaled to 8 bits), scaled to the model's height with the
aspect ratio kept (bicubic), then quantized to ``levels`` equal-width gray bins with level 0 = paper and the top
level = the darkest ink; ``ink: light`` for light ink on a dark background.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from seqvq.data.lines import LineSample, image_to_levels
from seqvq.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TRANSCRIPTS, SPLIT_LIST = "transcripts.txt", "{split}.txt"


def find_images(folder: Path) -> list[str]:
    """Relative POSIX names of the images under ``folder``, sorted."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                  if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def name_position(name: str) -> float:
    """A name's place in [0, 1), from its SHA-1: the same on every machine and in every folder order."""
    return int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:15], 16) / 16 ** 15


def held_out(names: list[str], fraction: float) -> set[str]:
    """The test names of the held-out split: those placed below ``fraction`` (module docstring)."""
    if not 0 < fraction <= 1:
        raise UserError(f"data.test_fraction must be in (0, 1], got {fraction}")
    test = {name for name in names if name_position(name) < fraction}
    return test or {min(names, key=name_position)}


def read_name_list(path: Path, known: set[str]) -> list[str]:
    """A split list: the first token of each non-empty line names an image under the folder."""
    names = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.split():
            continue
        name = line.split()[0]
        if name not in known:
            raise UserError(f"{path}:{number}: {name} is not an image in the folder; fix the name or remove "
                             f"the line")
        names.append(name)
    return names


def read_transcripts(path: Path, known: set[str]) -> dict[str, str]:
    """``NAME transcript ...`` lines (a name without words has an empty transcript)."""
    transcripts = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        if parts[0] not in known:
            raise UserError(f"{path}:{number}: {parts[0]} is not an image in the folder; fix the name or remove "
                             f"the line")
        transcripts[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return transcripts


class ImageFolderLines(Dataset):
    """One split of a folder of line images, decoded on access (see the module docstring)."""

    def __init__(self, folder: str | Path, split: str = "train", height: int = 32, levels: int = 4,
                 test_fraction: float = 0.1, transcripts: str | Path | None = None,
                 train_list: str | Path | None = None, test_list: str | Path | None = None, ink: str = "dark"):
        self.folder = Path(folder)
        if split not in ("train", "test"):
            raise UserError(f"{self.folder}: split must be train or test for a folder of images, got {split!r}")
        if ink not in ("dark", "light"):
            raise UserError(f"data.ink must be dark or light, got {ink!r}")
        self.height, self.levels, self.ink_is_dark = height, levels, ink == "dark"
        names = find_images(self.folder)
        if not names:
            raise UserError(f"{self.folder}: no .png/.jpg/.jpeg line images; pass a folder that holds them")
        known = set(names)
        lists = {"train": train_list, "test": test_list}
        lists = {name: Path(given) if given else self.folder / SPLIT_LIST.format(split=name)
                 for name, given in lists.items()}
        if any(path.is_file() for path in lists.values()):
            missing = [str(path) for path in lists.values() if not path.is_file()]
            if missing:
                raise UserError(f"{missing[0]}: missing; give both split lists or neither (then "
                                 f"data.test_fraction holds images out)")
            selected = read_name_list(lists[split], known)
            if not selected:
                raise UserError(f"{lists[split]}: lists no images; add the {split} images' names")
            shared = set(selected) & set(read_name_list(lists["test" if split == "train" else "train"], known))
            if shared:
                raise UserError(f"{lists[split]}: {len(shared)} images are in both split lists (e.g. "
                                 f"{min(shared)}); a line must not be trained and tested on")
        else:
            test = held_out(names, float(test_fraction))
            selected = [name for name in names if (name in test) == (split == "test")]
            if not selected:  # only the training split can be empty: the test split holds at least one image
                raise UserError(f"{self.folder}: no training images ({len(names)} images, all held out by "
                                 f"data.test_fraction {test_fraction}); add images or lower data.test_fraction")
        transcript_path = Path(transcripts) if transcripts else self.folder / TRANSCRIPTS
        if transcripts and not transcript_path.is_file():
            raise UserError(f"{transcript_path}: transcript file missing; fix data.transcripts")
        texts = read_transcripts(transcript_path, known) if transcript_path.is_file() else {}
        self.names = selected
        self.texts = [texts.get(name, "") for name in selected]
        for name in self.names:  # headers only: a file that is not an image fails here, not mid-training
            self._open(name).close()

    def _open(self, name: str) -> Image.Image:
        path = self.folder / name
        try:
            return Image.open(path)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            raise UserError(f"{path}: not a readable image ({error}); replace or remove the file") from None

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> LineSample:
        name = self.names[index]
        path = self.folder / name
        image = self._open(name)
        try:
            with image:
                levels = image_to_levels(image, self.height, self.levels, self.ink_is_dark)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise UserError(f"{path}: not a readable image ({error}); replace or remove the file") from None
        return LineSample(torch.from_numpy(levels), self.texts[index], str(path))
