"""MaskGIT (Chang et al. 2022): a bidirectional transformer over the code map of a frozen VQ autoencoder, trained by
masked token modeling and sampled by iterative parallel decoding.

* Input: the N = H x W codes of an image, row-major, with masked positions set to the [MASK] token (id K, the
  codebook size); token embeddings plus learned positional embeddings, pre-LN transformer blocks with full
  (bidirectional) attention, a LayerNorm and a linear head to the K code logits.
* Training (Chang §3.1): a ratio r ~ U(0, 1) per map, ceil(gamma(r) N) positions masked uniformly at random with
  the cosine schedule gamma(r) = cos(pi r / 2) (Chang eq. 3 and §3.3), and the cross-entropy of the codes at the
  masked positions (Chang eq. 1).
* Decoding (Chang §3.2): T steps from an all-masked map. At step t every masked position samples a code from the
  predicted distribution; the positions still masked after it are the n_t least confident new samples, n_t =
  floor(gamma((t + 1) / T) N) clamped to [1, masked - 1] (0 at the last step). The confidence is log p of the
  sampled code plus Gumbel noise scaled by temperature x (1 - (t + 1) / T) (the released code's
  ``choice_temperature``, 4.5): the noise is annealed to zero. A fixed token is never masked again.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def cosine_mask_ratio(progress: torch.Tensor | float) -> torch.Tensor:
    """gamma(r) = cos(pi r / 2): the fraction of the map masked at progress r in [0, 1] (Chang §3.3)."""
    return torch.cos(math.pi / 2 * torch.as_tensor(progress, dtype=torch.float64))


def masked_counts(num_tokens: int, steps: int) -> list[int]:
    """The number of positions still masked after each of the ``steps`` decoding steps of an all-masked map of
    ``num_tokens`` positions (the last is 0)."""
    counts, masked = [], num_tokens
    for step in range(steps):
        if step == steps - 1:
            masked = 0
        else:
            scheduled = math.floor(float(cosine_mask_ratio((step + 1) / steps)) * num_tokens)
            masked = max(1, min(masked - 1, scheduled))
        counts.append(masked)
    return counts


def random_mask(batch: int, num_tokens: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, num_tokens) bool, True where masked: ceil(gamma(r) N) positions per row, r ~ U(0, 1) (Chang §3.1)."""
    ratio = torch.rand(batch, generator=generator, dtype=torch.float64)
    count = torch.ceil(cosine_mask_ratio(ratio) * num_tokens).clamp(1, num_tokens).long()
    ranks = torch.rand(batch, num_tokens, generator=generator).argsort(dim=1).argsort(dim=1)
    return ranks < count.unsqueeze(1)


def iterative_decode(predict: Callable[[torch.Tensor], torch.Tensor], batch: int, num_tokens: int, mask_id: int,
                     steps: int = 8, temperature: float = 4.5,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, num_tokens) codes sampled by Chang §3.2's decoding; ``predict`` maps (batch, num_tokens) tokens
    ([MASK] = ``mask_id``) to (batch, num_tokens, K) logits."""
    if steps < 1:
        raise ValueError(f"decoding steps must be >= 1, got {steps}")
    tokens = torch.full((batch, num_tokens), mask_id, dtype=torch.long)
    for step, still_masked in enumerate(masked_counts(num_tokens, steps)):
        masked = tokens == mask_id
        logits = predict(tokens).float()
        probs = logits.softmax(-1).cpu()
        sampled = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(batch, num_tokens)
        sampled = torch.where(masked, sampled, tokens)
        confidence = probs.gather(-1, sampled.unsqueeze(-1)).squeeze(-1).clamp_min(1e-30).log()
        uniform = torch.rand(batch, num_tokens, generator=generator).clamp(1e-20, 1 - 1e-7)
        confidence = confidence + temperature * (1 - (step + 1) / steps) * -torch.log(-torch.log(uniform))
        confidence = confidence.masked_fill(~masked, math.inf)  # fixed tokens stay fixed
        remask = confidence.argsort(dim=1)[:, :still_masked]
        tokens = sampled.scatter(1, remask, mask_id)
    return tokens


class MaskGITTransformer(nn.Module):
    """The bidirectional transformer: (B, N) tokens in [0, K] (K = [MASK]) -> (B, N, K) code logits.
    Chang et al. use 24 blocks of width 768; Huh et al.'s slimmed model 8 blocks."""

    def __init__(self, codebook_size: int, num_tokens: int, dim: int = 256, depth: int = 8, heads: int = 8,
                 mlp_ratio: float = 4.0, dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be a multiple of heads {heads}")
        self.codebook_size, self.num_tokens, self.mask_id = codebook_size, num_tokens, codebook_size
        self.token_embedding = nn.Embedding(codebook_size + 1, dim)
        self.position_embedding = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, codebook_size)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) outputs of the last block, normalized."""
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding)
        return self.norm(self.blocks(x))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(tokens))

    def masked_nll(self, codes: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy (nats) of ``codes`` (B, N) at the positions ``mask`` hides, and their count (the
        head computed at those positions only)."""
        logits = self.head(self.hidden(codes.masked_fill(mask, self.mask_id))[mask])
        return F.cross_entropy(logits, codes[mask], reduction="sum"), int(mask.sum())

    @torch.no_grad()
    def generate(self, batch: int, steps: int = 8, temperature: float = 4.5,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch, N) codes by iterative decoding (:func:`iterative_decode`)."""
        device = self.position_embedding.device
        return iterative_decode(lambda tokens: self(tokens.to(device)), batch, self.num_tokens, self.mask_id, steps,
                                temperature, generator)
