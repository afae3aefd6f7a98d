"""ScribbleLens (OpenSLR 84) line images read in place from `scribblelens.corpus.v1.2.zip`.

The archive holds one top folder (`scribblelens.corpus.v1/`) with the line images under `nl/...` and the split
lists under `corpora/`: `nl.<colormode>.lines.<split>.dat` (colormode `bw`, `gray` or `color`; split `train` or
`test`). Each non-empty list line names a line image and optionally its transcript, both relative to the top
folder. Nothing is unpacked: images are decoded from the archive when a line is requested.

Preprocessing (§IV-B of Łańcucki et al. 2020; `seqvq.data.lines.image_to_levels`, shared with the reader of a
folder of line images): grayscale, scaled to `height` (32) pixels with the aspect kept, then quantized to `levels`
gray levels with level 0 = paper. The recipe uses the `bw` lists and 4 levels: the `bw`
lines are ink on a whitened background, so 4 levels keep the ink's anti-aliased edge while the bits/dim stay
comparable with the built corpus (same L); any L in [2, 256] can be configured.
"""
from __future__ import annotations

import io
import os
import zipfile

import torch
from PIL import Image
from torch.utils.data import Dataset

from seqvq.data.lines import LineSample, image_to_levels
from seqvq.errors import UserError

LIST_NAME = "corpora/nl.{colormode}.lines.{split}.dat"


class ScribbleLensLines(Dataset):
    """Lines of one ScribbleLens split, decoded from the corpus zip on access."""

    def __init__(self, zip_path: str, split: str = "train", colormode: str = "bw", height: int = 32,
                 levels: int = 4):
        if not os.path.isfile(zip_path):
            raise UserError(f"{zip_path}: no such file; download scribblelens.corpus.v1.2.zip "
                                    f"(OpenSLR 84) and pass its path")
        self.zip_path, self.height, self.levels = zip_path, height, levels
        self._zip, self._zip_pid = None, None
        with zipfile.ZipFile(zip_path) as archive:
            names = set(archive.namelist())
            list_member = self._find_list(names, LIST_NAME.format(colormode=colormode, split=split))
            root = list_member[: -len(LIST_NAME.format(colormode=colormode, split=split))]
            raw = archive.read(list_member).decode("utf8")
        self.images, self.transcripts = [], []
        for number, line in enumerate(raw.splitlines(), start=1):
            tokens = line.split()
            if not tokens:
                continue
            image = tokens[0] if tokens[0].startswith(root) else root + tokens[0]
            if image not in names:
                raise UserError(f"{zip_path}: {list_member} line {number} names {image}, which is missing "
                                 f"from the archive; re-download the corpus")
            transcript = None
            if len(tokens) > 1:
                transcript = tokens[1] if tokens[1].startswith(root) else root + tokens[1]
                if transcript not in names:
                    raise UserError(f"{zip_path}: {list_member} line {number} names {transcript}, which is "
                                     f"missing from the archive; re-download the corpus")
            self.images.append(image)
            self.transcripts.append(transcript)
        if not self.images:
            raise UserError(f"{zip_path}: {list_member} lists no lines")

    def _find_list(self, names: set[str], suffix: str) -> str:
        matches = sorted(name for name in names if name.endswith("/" + suffix) or name == suffix)
        if not matches:
            lists = sorted(n for n in names if "/corpora/" in n and n.endswith(".dat"))[:8]
            raise UserError(f"{self.zip_path}: no member ending in {suffix}; is this the ScribbleLens corpus "
                             f"zip? (lists found: {lists or 'none'})")
        return matches[0]

    def _archive(self) -> zipfile.ZipFile:
        """One open handle per process (data loader workers re-open it)."""
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip, self._zip_pid = zipfile.ZipFile(self.zip_path), os.getpid()
        return self._zip

    def __getstate__(self):
        return {**self.__dict__, "_zip": None, "_zip_pid": None}

    def __len__(self) -> int:
        return len(self.images)

    def _read(self, member: str) -> bytes:
        try:
            return self._archive().read(member)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise UserError(f"{self.zip_path}: member {member} is corrupt ({err}); "
                             f"re-download the corpus") from None

    def __getitem__(self, index: int) -> LineSample:
        member = self.images[index]
        payload = self._read(member)
        try:
            with Image.open(io.BytesIO(payload)) as image:
                levels = torch.from_numpy(image_to_levels(image, self.height, self.levels))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise UserError(f"{self.zip_path}: member {member} is not a readable image ({err}); "
                             f"re-download the corpus") from None
        transcript = self.transcripts[index]
        text = self._read(transcript).decode("utf8").strip() if transcript else ""
        return LineSample(levels, text, member)
