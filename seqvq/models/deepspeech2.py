"""DeepSpeech2-like CTC phone recognizer with a VQ bottleneck (Łańcucki et al. 2020, §IV-A).

Encoder: two Conv2d layers over (time, frequency) with BatchNorm and clipped ReLU, time stride 3 overall (30 ms
per latent), then a stack of bidirectional LSTMs. Bottleneck: BatchNorm -> linear projection ->
``VectorQuantizer`` (one code per latent; left out for the "no bottleneck" baseline, which keeps every other
layer). Then a 1x1-convolution latent mixer and a CTC head over ``num_classes`` labels (blank = 0).

All BatchNorms see valid frames only (``MaskedBatchNorm``); padded frames are zeroed before every convolution so
that a batch gives the same outputs as its utterances one by one (up to batch statistics).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from seqvq.models.masked_lstm import MaskedLSTM
from seqvq.quantize import MaskedBatchNorm, build_quantizer


def conv_output_lengths(conv: nn.Conv2d, lengths: torch.Tensor) -> torch.Tensor:
    """Valid time steps after ``conv`` (time is dimension 0 of its kernel)."""
    kernel, stride, padding = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    return torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor") + 1


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, T)`` bool mask, True at valid positions."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


@dataclass
class CTCModelOutput:
    """Per-latent log-probabilities ``(B, T', C)`` with their lengths, plus the bottleneck's codes and loss."""

    log_probs: torch.Tensor
    lengths: torch.Tensor
    codes: torch.Tensor | None = None  # (B, T') int64, -1 at padded latents; None without a bottleneck
    vq_loss: torch.Tensor | None = None
    vq_metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class ConvFrontEnd(nn.Module):
    """Conv2d + masked BatchNorm + clipped ReLU layers over ``(B, T, D)`` features, as in DeepSpeech2.

    ``in_channels`` splits the feature vector into equal blocks used as input channels (3 for static, Δ, ΔΔ), so
    that the frequency kernels slide over filterbank bins rather than across block boundaries.
    """

    def __init__(self, input_dim: int, in_channels: int = 1, channels: Sequence[int] = (32, 32),
                 kernels: Sequence[Sequence[int]] = ((11, 41), (11, 21)),
                 strides: Sequence[Sequence[int]] = ((3, 2), (1, 2)), clip: float = 20.0):
        super().__init__()
        if not len(channels) == len(kernels) == len(strides):
            raise ValueError("conv channels, kernels and strides need one entry per layer")
        if input_dim % in_channels:
            raise ValueError(f"input_dim={input_dim} does not split into in_channels={in_channels} equal blocks")
        self.in_channels = in_channels
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        self.clip = clip
        previous, freq = in_channels, input_dim // in_channels
        for out_channels, kernel, stride in zip(channels, kernels, strides):
            padding = (kernel[0] // 2, kernel[1] // 2)
            self.convs.append(nn.Conv2d(previous, out_channels, tuple(kernel), tuple(stride), padding, bias=False))
            self.norms.append(MaskedBatchNorm(out_channels))
            freq = (freq + 2 * padding[1] - kernel[1]) // stride[1] + 1
            previous = out_channels
        self.output_dim = previous * freq

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            lengths = conv_output_lengths(conv, lengths)
        return lengths

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, time, _ = features.shape
        x = features.reshape(batch, time, self.in_channels, -1).transpose(1, 2)  # (B, C_in, T, D / C_in)
        for conv, norm in zip(self.convs, self.norms):
            x = x * lengths_to_mask(lengths, x.shape[2])[:, None, :, None]
            x = conv(x)
            lengths = conv_output_lengths(conv, lengths)
            mask = lengths_to_mask(lengths, x.shape[2])
            channels_last = x.permute(0, 2, 3, 1)  # (B, T, F, C)
            channels_last = norm(channels_last, mask[:, :, None].expand(channels_last.shape[:3]))
            x = channels_last.clamp(0.0, self.clip).permute(0, 3, 1, 2)
        batch, channels, time, freq = x.shape
        return x.permute(0, 2, 1, 3).reshape(batch, time, channels * freq), lengths


class DeepSpeech2CTC(nn.Module):
    """Conv front end -> BiLSTMs -> [BatchNorm -> Linear -> VectorQuantizer] -> 1x1-conv mixer -> CTC head.

    Args:
        input_dim: feature dimension (243 for 80 mel + energy with Δ, ΔΔ).
        in_channels: equal blocks of the feature vector fed to the convolutions as channels (3: static, Δ, ΔΔ).
        num_classes: CTC labels including the blank at index 0.
        rnn_hidden, rnn_layers: size of each LSTM direction and number of BiLSTM layers.
        bottleneck_dim: width of the linear projection that feeds the quantizer.
        quantizer: keyword arguments of :class:`seqvq.VectorQuantizer` (``codebook_size`` and any method options;
            ``kind: fsq`` / ``bsq`` / ``residual`` for another quantizer, see :func:`seqvq.build_quantizer`),
            or ``None`` for the no-bottleneck baseline (BatchNorm and projection are kept).
        mixer_dim: channels of the 1x1-conv latent mixer (followed by a ReLU); ``None`` = head right after.
        input_tokens: the inputs are token ids (discrete units), stored as one-dimensional features (``input_dim``
            1): an embedding of ``input_tokens`` entries of ``token_dim`` values feeds the front end; ``None`` =
            the inputs are features.
    """

    def __init__(self, input_dim: int, num_classes: int, in_channels: int = 1, conv_channels: Sequence[int] = (32, 32),
                 conv_kernels: Sequence[Sequence[int]] = ((11, 41), (11, 21)),
                 conv_strides: Sequence[Sequence[int]] = ((3, 2), (1, 2)), clip: float = 20.0,
                 rnn_hidden: int = 256, rnn_layers: int = 3, rnn_dropout: float = 0.0, bottleneck_dim: int = 64,
                 quantizer: dict | None = None, mixer_dim: int | None = 256, input_tokens: int | None = None,
                 token_dim: int = 64):
        super().__init__()
        if input_tokens is not None and input_dim != 1:
            raise ValueError(f"input_tokens={input_tokens} reads one token id per frame, but input_dim={input_dim} "
                             "(features): store the tokens as one-dimensional features (and data.deltas: false)")
        self.token_embedding = nn.Embedding(input_tokens, token_dim) if input_tokens is not None else None
        if self.token_embedding is not None:
            input_dim = token_dim
        self.front_end = ConvFrontEnd(input_dim, in_channels, conv_channels, conv_kernels, conv_strides, clip)
        self.rnn = MaskedLSTM(self.front_end.output_dim, rnn_hidden, num_layers=rnn_layers, batch_first=True,
                           bidirectional=True, dropout=rnn_dropout if rnn_layers > 1 else 0.0)
        self.bottleneck_norm = MaskedBatchNorm(2 * rnn_hidden)
        self.projection = nn.Linear(2 * rnn_hidden, bottleneck_dim)
        self.quantizer = build_quantizer(bottleneck_dim, **quantizer) if quantizer is not None else None
        self.mixer = nn.Conv1d(bottleneck_dim, mixer_dim, kernel_size=1) if mixer_dim else None
        self.head = nn.Linear(mixer_dim or bottleneck_dim, num_classes)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.front_end.output_lengths(lengths)

    def encoder_layers(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``([front end output, BiLSTM layer 1, ..., layer L], output lengths)``: the encoder's hidden states before
        the bottleneck (each (B, T', C), the BiLSTM ones zero at padded steps), e.g. as features for k-means units."""
        x, lengths = self.front_end(self._embed(features), lengths)
        return [x, *self.rnn.layer_outputs(x, lengths_to_mask(lengths, x.shape[1]))], lengths

    def _embed(self, features: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T, 1) -> their embeddings (B, T, token_dim); features as they are."""
        if self.token_embedding is None:
            return features
        return self.token_embedding(features[..., 0].round().long())

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> CTCModelOutput:
        x, lengths = self.front_end(self._embed(features), lengths)
        mask = lengths_to_mask(lengths, x.shape[1])
        x = self.rnn(x, mask)
        latents = self.projection(self.bottleneck_norm(x, mask))
        codes, vq_loss, vq_metrics = None, None, {}
        if self.quantizer is not None:
            result = self.quantizer(latents, mask=mask)
            latents, codes, vq_loss, vq_metrics = result.quantized, result.codes, result.loss, dict(result.metrics)
        if self.mixer is not None:
            latents = torch.relu(self.mixer(latents.transpose(1, 2)).transpose(1, 2))
        log_probs = torch.log_softmax(self.head(latents), dim=-1)
        return CTCModelOutput(log_probs, lengths, codes, vq_loss, vq_metrics)
