"""One constructor for every quantizer kind, so a config can name its bottleneck: ``{"kind": "fsq", ...}``, and
the keys such a config accepts."""
from __future__ import annotations

import dataclasses

from torch import nn

from ..options import KindSection, Section
from .bsq import BinarySphericalQuantizer
from .core import VectorQuantizer
from .fsq import FiniteScalarQuantizer
from .lfq import LookupFreeQuantizer
from .peer import PeerVectorQuantize
from .residual import CODEBOOK_FREE_STAGES, STACK_OPTIONS, ResidualVectorQuantizer

QUANTIZER_KINDS = {"vq": VectorQuantizer, "residual": ResidualVectorQuantizer, "fsq": FiniteScalarQuantizer,
                   "bsq": BinarySphericalQuantizer, "lfq": LookupFreeQuantizer,
                   "vector_quantize_pytorch": PeerVectorQuantize}


def build_quantizer(dim: int, kind: str = "vq", **options) -> nn.Module:
    """The quantizer of ``kind`` (``"vq"``, ``"residual"``, ``"fsq"``, ``"bsq"``, ``"lfq"``, or
    ``"vector_quantize_pytorch"``, the peer library's, for comparisons) on ``dim`` channels, with the class's own
    keyword ``options``."""
    if kind not in QUANTIZER_KINDS:
        raise ValueError(f"quantizer kind must be one of {', '.join(QUANTIZER_KINDS)}; got {kind!r}")
    return QUANTIZER_KINDS[kind](dim, **options)


def quantizer_section() -> KindSection:
    """The keys of a config's ``quantizer:`` mapping (the ``options`` of :func:`build_quantizer`), by its ``kind``
    (default ``vq``): :class:`VectorQuantizer`'s keyword arguments, with the fields of its remedies' options
    dataclasses as nested mappings (``reestimate``, ``affine``, ``usage_regularizer``, ``temperature``), or those
    of the residual (its codebook-free ``stage`` a nested mapping by its own ``kind``), FSQ, BSQ, LFQ and
    peer (vector-quantize-pytorch) quantizers."""
    vq = Section.of(VectorQuantizer, skip=("dim",))
    # A residual stack's codebook-free stages take their quantizer's options less those of the stack itself.
    stage = KindSection.of_kinds("", **{kind: Section.of(CODEBOOK_FREE_STAGES[kind], skip=STACK_OPTIONS)
                                        for kind in CODEBOOK_FREE_STAGES})
    # A residual stack passes every other option on to its VectorQuantizer stages (its **vq_kwargs).
    residual = dataclasses.replace(Section.of(ResidualVectorQuantizer, skip=("dim",), stage=stage).merged(vq),
                                   open=False)
    return KindSection.of_kinds("vq", vq=vq, residual=residual,
                                fsq=Section.of(FiniteScalarQuantizer, skip=("dim",)),
                                bsq=Section.of(BinarySphericalQuantizer, skip=("dim",)),
                                lfq=Section.of(LookupFreeQuantizer, skip=("dim",)),
                                vector_quantize_pytorch=Section.of(PeerVectorQuantize, skip=("dim",)))
