"""ViT-Tiny with a VQ layer after the 6th transformer block (Huh et al. 2023 §5.1, App. A.1 "ViT quantization",
Table 7: 16 x 16 patches, width 192, depth 12, 3 heads, MLP 768, GELU).

Written layer for layer after timm's ``timm/models/vision_transformer.py`` (``vit_tiny_patch16_224``) with the same
parameter names, so timm's ``state_dict`` loads into ``VisionTransformer(quantizer=None)``: ``cls_token``,
``pos_embed`` (class token + patches), ``patch_embed.proj`` (a stride-p convolution), ``blocks.i`` (pre-norm:
``norm1``, ``attn.qkv`` with bias, ``attn.proj``, ``norm2``, ``mlp.fc1``, GELU, ``mlp.fc2``), ``norm``, ``head``
on the class token; LayerNorm eps 1e-6; timm's initialisation (truncated normal std 0.02 for the linear layers
and position embedding, std 1e-6 for the class token).

Quantization: every token after block ``quantize_after`` (6) is quantized, channel-last (B, 1 + N, 192).  The
paper quantizes "the individual tokens" (14 x 14 patch tokens at 224 px); we quantize the class token too, so that
no information bypasses the bottleneck through it (a choice: the paper does not say).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantized_classifier import QuantizedClassifier, build_quantizer


def trunc_normal(tensor: torch.Tensor, std: float = 0.02) -> torch.Tensor:
    return nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


class PatchEmbed(nn.Module):
    def __init__(self, image_size: int, patch_size: int, embed_dim: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not a multiple of patch_size={patch_size}")
        self.image_size, self.num_patches = image_size, (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"ViT expects {self.image_size} x {self.image_size} images (its position embedding), "
                             f"got {tuple(images.shape[-2:])}")
        return self.proj(images).flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(QuantizedClassifier):
    """timm's VisionTransformer (class-token pooling); defaults are ViT-Tiny/16 at 224 px (Huh Table 7).
    ``quantizer`` (VectorQuantizer keywords, or FSQ / BSQ ones with ``kind``; None: no VQ) quantizes the tokens
    after block ``quantize_after``."""

    def __init__(self, num_classes: int = 1000, quantizer: dict | None = None, image_size: int = 224,
                 patch_size: int = 16, embed_dim: int = 192, depth: int = 12, num_heads: int = 3,
                 mlp_ratio: float = 4.0, quantize_after: int = 6):
        super().__init__()
        if not 1 <= quantize_after <= depth:
            raise ValueError(f"quantize_after={quantize_after} must name a block in 1..depth={depth}")
        self.quantize_after = quantize_after
        self.patch_embed = PatchEmbed(image_size, patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, embed_dim))
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)))
        self.quantizer = build_quantizer(embed_dim, -1, quantizer)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        trunc_normal(self.pos_embed)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal(module.weight)
                nn.init.zeros_(module.bias)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> tokens after block ``quantize_after``, (B, 1 + N, D): what the quantizer sees."""
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.blocks[: self.quantize_after](x)

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.blocks[self.quantize_after:](tokens))
        return self.head(x[:, 0])

