"""A PNG grid of lines: each original, the line sampled back from its codes, and its code sequence."""
from __future__ import annotations

import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def save_reconstruction_grid(path: str, originals: torch.Tensor, samples: torch.Tensor, codes: torch.Tensor,
                             widths: torch.Tensor, levels: int, names: list[str] | None = None) -> None:
    """Write `path` (PNG, atomically): for line i, `originals[i]` over `samples[i]`, codes as text below.

    originals/samples are (B, H, W) levels, codes (B, T) with -1 at padding, widths (B,).
    """
    count = len(widths)
    max_width = int(widths.max())
    figure, axes = plt.subplots(2 * count, 1, figsize=(max(4.0, max_width / 16), 1.3 * count * 2),
                                squeeze=False)
    for line in range(count):
        width = int(widths[line])
        line_codes = codes[line][codes[line] >= 0].tolist()
        for offset, (image, title) in enumerate(((originals, "original"), (samples, "sampled from codes"))):
            axis = axes[2 * line + offset, 0]
            axis.imshow(image[line, :, :width].cpu().numpy(), cmap="gray_r", vmin=0, vmax=levels - 1,
                        interpolation="nearest", aspect="equal")
            axis.set_xlim(-0.5, max_width - 0.5)
            axis.set_xticks([])
            axis.set_yticks([])
            label = f"{names[line]}: {title}" if names and offset == 0 else title
            axis.set_title(label, fontsize=7, loc="left")
        axes[2 * line + 1, 0].set_xlabel("codes: " + " ".join(map(str, line_codes)), fontsize=6, wrap=True)
    figure.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(suffix=".png.tmp", dir=directory)
    os.close(handle)
    try:
        figure.savefig(tmp_path, format="png", dpi=120)
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise
    finally:
        plt.close(figure)
