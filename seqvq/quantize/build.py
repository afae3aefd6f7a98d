"""One constructor for every quantizer kind, so a config can name its bottleneck: ``{"kind": "fsq", ...}``."""
from __future__ import annotations

from torch import nn

from .bsq import BinarySphericalQuantizer
from .core import VectorQuantizer
from .fsq import FiniteScalarQuantizer
from .residual import ResidualVectorQuantizer

QUANTIZER_KINDS = {"vq": VectorQuantizer, "residual": ResidualVectorQuantizer, "fsq": FiniteScalarQuantizer,
                   "bsq": BinarySphericalQuantizer}


def build_quantizer(dim: int, kind: str = "vq", **options) -> nn.Module:
    """The quantizer of ``kind`` (``"vq"``, ``"residual"``, ``"fsq"``, ``"bsq"``) on ``dim`` channels, with the
    class's own keyword ``options``."""
    if kind not in QUANTIZER_KINDS:
        raise ValueError(f"quantizer kind must be one of {', '.join(QUANTIZER_KINDS)}; got {kind!r}")
    return QUANTIZER_KINDS[kind](dim, **options)
