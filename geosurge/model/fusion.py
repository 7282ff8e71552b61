"""Semantic fusion (paper §III-B, Fig. 2): segmentation tokens query appearance tokens.

Semantic tokens come from the label map: every patch of the backbone's grid is one-hot encoded and
projected linearly to ``query_dim`` (done as a summed embedding lookup, never materializing the
one-hot tensor), a CLS token is prepended and learned positions are added. Each fusion block is a
transformer block whose attention is latent multi-head cross-attention in the style of DeepSeek's MLA:
queries from the fused stream through a ``query_dim`` latent, keys and values from the appearance tokens
through one shared ``latent_dim`` latent, expanded per head. The fused CLS, layer-normed and projected,
is the visual feature. See docs/architecture.md for the choices the paper leaves open.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import resample_labels
from .config import FusionConfig


class SemanticTokenizer(nn.Module):
    """Label map (B, H, W) -> semantic tokens (B, 1 + g*g, query_dim).

    Each of the g x g patches reads the label map on a ``label_samples`` x ``label_samples`` lattice.
    """

    def __init__(self, grid: int, label_samples: int, num_classes: int, dim: int):
        super().__init__()
        self.grid, self.label_samples, self.num_classes, self.dim = grid, label_samples, num_classes, dim
        # Row (position-in-patch * num_classes + class) of this table is the column of the linear
        # projection that the one-hot entry selects: summing rows == projecting the one-hot patch.
        self.proj = nn.Embedding(label_samples * label_samples * num_classes, dim)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        offsets = torch.arange(label_samples * label_samples) * num_classes
        self.register_buffer("offsets", offsets, persistent=False)

    @property
    def label_side(self) -> int:
        """Label samples per image side (grid x label_samples): the lattice the label maps are resampled to."""
        return self.grid * self.label_samples

    def patch_indices(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, g*g, s*s) embedding rows: labels sampled on an s x s lattice per patch (s = label_samples)."""
        b, h, w = labels.shape
        side = self.label_side
        if (h, w) != (side, side):
            labels = resample_labels(labels, side)  # a no-op when label_samples == patch size
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes}); got [{int(labels.min())}, {int(labels.max())}]")
        g, c = self.grid, self.label_samples
        patches = labels.reshape(b, g, c, g, c).permute(0, 1, 3, 2, 4).reshape(b, g * g, c * c)
        return patches + self.offsets

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        idx = self.patch_indices(labels)
        b, n, k = idx.shape
        semantic = F.embedding_bag(idx.reshape(b * n, k), self.proj.weight, mode="sum").view(b, n, self.dim) + self.bias
        return torch.cat([self.cls.expand(b, -1, -1), semantic], dim=1) + self.pos


class LatentCrossAttention(nn.Module):
    """Multi-head attention with MLA-style low-rank queries and one shared key/value latent.

    Keys and values are the appearance tokens *and* the fused stream's own tokens, each projected into
    the same ``latent_dim`` latent and concatenated. Without the stream's tokens among the keys, every
    query would be processed independently and the CLS (the only output) would never see the label map.
    """

    def __init__(self, query_in: int, kv_in: int, width: int, num_heads: int, query_dim: int, latent_dim: int, dropout: float = 0.0):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"fusion width {width} is not divisible by {num_heads} heads")
        self.h, self.dh = num_heads, width // num_heads
        self.q_down = nn.Linear(query_in, query_dim, bias=False)
        self.q_norm = nn.LayerNorm(query_dim)
        self.q_up = nn.Linear(query_dim, width, bias=False)
        self.kv_down = nn.Linear(kv_in, latent_dim, bias=False)  # appearance tokens -> latent
        self.self_down = nn.Linear(query_in, latent_dim, bias=False)  # stream tokens -> the same latent
        self.kv_norm = nn.LayerNorm(latent_dim)
        self.k_up = nn.Linear(latent_dim, width, bias=False)
        self.v_up = nn.Linear(latent_dim, width, bias=False)
        self.out = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, q_tokens: torch.Tensor, rgb: torch.Tensor, stream: torch.Tensor) -> torch.Tensor:
        b, nq, _ = q_tokens.shape
        q = self.q_up(self.q_norm(self.q_down(q_tokens))).view(b, nq, self.h, self.dh).transpose(1, 2)
        c = self.kv_norm(torch.cat([self.kv_down(rgb), self.self_down(stream)], dim=1))
        nk = c.shape[1]
        k = self.k_up(c).view(b, nk, self.h, self.dh).transpose(1, 2)
        v = self.v_up(c).view(b, nk, self.h, self.dh).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(a.transpose(1, 2).reshape(b, nq, self.h * self.dh))


class FusionBlock(nn.Module):
    """Pre-norm transformer block: x = R(x) + Attn(LN(x) | LN(rgb), LN(x)); x = x + MLP(LN(x)).

    The residual stream is the fused stream at the fusion width; the first block's input is the
    semantic tokens (``query_dim`` wide), so its residual ``R`` is a linear map up to the width.
    ``cls_only`` computes just the CLS row (all the last block needs), attending to every token.
    """

    def __init__(self, in_dim: int, width: int, cfg: FusionConfig):
        super().__init__()
        self.norm_q = nn.LayerNorm(in_dim)
        self.norm_kv = nn.LayerNorm(width)
        self.attn = LatentCrossAttention(in_dim, width, width, cfg.num_heads, cfg.query_dim, cfg.latent_dim, cfg.dropout)
        self.residual = nn.Identity() if in_dim == width else nn.Linear(in_dim, width, bias=False)
        self.norm_mlp = nn.LayerNorm(width)
        hidden = int(width * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, rgb: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        h = self.norm_q(x)
        q_src, q_h = (x[:, :1], h[:, :1]) if cls_only else (x, h)
        y = self.residual(q_src) + self.attn(q_h, self.norm_kv(rgb), h)
        return y + self.mlp(self.norm_mlp(y))


class SemanticFusion(nn.Module):
    """Backbone tokens + label map -> visual feature (B, embed_dim) (not yet normalized)."""

    def __init__(self, backbone_dim: int, grid: int, patch_size: int, embed_dim: int, cfg: FusionConfig):
        super().__init__()
        width = cfg.width or backbone_dim
        self.tokenizer = SemanticTokenizer(grid, cfg.label_samples or patch_size, cfg.num_classes, cfg.query_dim)
        self.rgb_proj = nn.Identity() if width == backbone_dim else nn.Linear(backbone_dim, width)
        self.blocks = nn.ModuleList(
            FusionBlock(cfg.query_dim if i == 0 else width, width, cfg) for i in range(cfg.num_blocks)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, embed_dim)

    def fused_tokens(self, rgb_tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """All fused tokens (B, 1 + N, width) after the last block (for inspection; slower than ``forward``)."""
        rgb = self.rgb_proj(rgb_tokens)
        x = self.tokenizer(labels)
        for block in self.blocks:
            x = block(x, rgb)
        return x

    def forward(self, rgb_tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        rgb = self.rgb_proj(rgb_tokens)
        x = self.tokenizer(labels)
        for i, block in enumerate(self.blocks):
            # Only the CLS leaves the module, so the last block computes its row alone.
            x = block(x, rgb, cls_only=i == len(self.blocks) - 1)
        return self.head(self.norm(x[:, 0]))


class RGBHead(nn.Module):
    """Without fusion (the paper's RGB-only ablation): backbone CLS -> layer norm -> linear."""

    def __init__(self, backbone_dim: int, embed_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(backbone_dim)
        self.head = nn.Linear(backbone_dim, embed_dim)

    def forward(self, rgb_tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(rgb_tokens[:, 0]))
