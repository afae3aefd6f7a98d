"""Export of a quantizer's evaluation path: encode (input -> codes) and decode (codes -> vectors), as
``torch.export`` programs and as ONNX models that onnxruntime runs (``pip install seqvq[export]``).

The encoder is the quantizer's evaluation forward (pre_norm with its running moments, the affine map, the nearest
code of eq. 5 / FSQ's rounding / LFQ's signs) keeping only the codes; the decoder is ``codes_to_vectors``.  Both are
traced once with the leading (batch, time) sizes dynamic.  The input is taken whole: no mask (give the padded
positions whatever value; their codes are simply not read).

Exactness: traced, the nearest-code search is one block of centred scores and its first minimum
(:mod:`.distance`), the same formula as eager search; eager search on CPU goes through FAISS where it is installed.
Codes can differ only where two codes are at the same float32 distance, up to rounding (a float32 tie);
:func:`code_disagreements` counts the disagreements and which of them are such ties (bench/export_agreement.py:
100,000 inputs).
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim


class CodeEncoder(nn.Module):
    """Input ``(..., dim)`` (channels where the quantizer has them) -> codes, by the quantizer in evaluation mode."""

    def __init__(self, quantizer: nn.Module):
        super().__init__()
        self.quantizer = quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(x).codes


class CodeDecoder(nn.Module):
    """Codes -> vectors ``(..., dim)`` (the quantizer's ``codes_to_vectors``; code -1 decodes to zeros)."""

    def __init__(self, quantizer: nn.Module):
        super().__init__()
        self.quantizer = quantizer

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.quantizer.codes_to_vectors(codes)


def evaluation_modules(quantizer: nn.Module) -> tuple[CodeEncoder, CodeDecoder]:
    """Encoder and decoder around a copy of ``quantizer`` in evaluation mode (the caller's is left as it is)."""
    frozen = copy.deepcopy(quantizer).eval()
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    return CodeEncoder(frozen), CodeDecoder(frozen)


def _leading_dims_dynamic(example: torch.Tensor, channel_dims: int) -> tuple[dict[int, Dim], ...]:
    """Every dimension of ``example`` but its last ``channel_dims`` dynamic (batch, time, ...)."""
    return ({index: Dim.AUTO for index in range(example.dim() - channel_dims)},)


def export_programs(quantizer: nn.Module, example: torch.Tensor):
    """``(encode, decode)`` :class:`torch.export.ExportedProgram` of the evaluation path, traced on the input
    ``example`` (channel-last, ``(N, dim)`` or ``(B, T, dim)``); run them with ``.module()(x)``."""
    encoder, decoder = evaluation_modules(quantizer)
    with torch.no_grad():
        codes = encoder(example)
    encode = torch.export.export(encoder, (example,), dynamic_shapes=_leading_dims_dynamic(example, 1))
    decode = torch.export.export(decoder, (codes,), dynamic_shapes=_leading_dims_dynamic(codes, codes.dim() -
                                                                                          example.dim() + 1))
    return encode, decode


def export_onnx(quantizer: nn.Module, example: torch.Tensor, directory: str | Path) -> tuple[Path, Path]:
    """Write ``encode.onnx`` and ``decode.onnx`` of the evaluation path into ``directory`` (created; existing files
    of those names are refused, never overwritten) and return their paths."""
    directory = Path(directory)
    paths = directory / "encode.onnx", directory / "decode.onnx"
    existing = [str(path) for path in paths if path.exists()]
    if existing:
        raise FileExistsError(f"{', '.join(existing)} exist(s); export into a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    encode, decode = export_programs(quantizer, example)
    for program, path in zip((encode, decode), paths):
        torch.onnx.export(program, dynamo=True, external_data=False).save(str(path))
    return paths


def code_disagreements(quantizer: nn.Module, x: torch.Tensor, codes: torch.Tensor, reference: torch.Tensor,
                       relative_tolerance: float = 4 * torch.finfo(torch.float32).eps) -> tuple[int, int]:
    """``(disagreeing, ties)`` between two encodings ``codes`` and ``reference`` of ``x`` (N, dim) by a
    :class:`~.core.VectorQuantizer`: vectors whose codes differ, and how many of them are float32 ties — the two
    codes' squared distances, in float64, within ``relative_tolerance`` of each other."""
    quantizer = copy.deepcopy(quantizer).eval()
    differ = (codes != reference).reshape(-1, quantizer.num_codebooks).any(dim=1)
    if not differ.any():
        return 0, 0
    with torch.no_grad():
        z = x.reshape(-1, quantizer.dim)[differ]
        if quantizer.norm is not None:
            z = quantizer.norm(z)
        z = quantizer._comparison_space(z.reshape(-1, quantizer.num_codebooks, quantizer.code_dim)).double()
        a, b = (quantizer.codes_to_vectors(c.reshape(-1, quantizer.num_codebooks)[differ]).double()
                .reshape(z.shape) for c in (codes, reference))
    da, db = (z - a).pow(2).sum(-1), (z - b).pow(2).sum(-1)
    tie = ((da - db).abs() <= relative_tolerance * torch.maximum(da, db)).all(dim=1)
    return int(differ.sum()), int(tie.sum())
