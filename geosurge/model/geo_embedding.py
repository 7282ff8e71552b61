"""The geographic representation: one learned embedding table and temperature per hierarchy level."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class GeoEmbeddings(nn.Module):
    """``num_cells[l] x dim`` embeddings per level (L2-normalized at use) and a learnable temperature each."""

    def __init__(self, num_cells: Sequence[int], dim: int, init_temperature: float = 0.07):
        super().__init__()
        self.num_cells = list(num_cells)
        self.tables = nn.ParameterList(nn.Parameter(torch.randn(n, dim) * dim**-0.5) for n in self.num_cells)
        # log(1/T) as in CLIP's logit_scale: positive by construction, well-scaled gradients.
        self.logit_scale = nn.Parameter(torch.full((len(self.num_cells),), math.log(1.0 / init_temperature)))

    @property
    def num_levels(self) -> int:
        return len(self.num_cells)

    def scales(self) -> torch.Tensor:
        """1 / temperature per level, capped at 100 like CLIP so a temperature cannot collapse to zero."""
        return self.logit_scale.clamp(max=math.log(100.0)).exp()

    def temperatures(self) -> torch.Tensor:
        return 1.0 / self.scales()

    def normalized(self, level: int) -> torch.Tensor:
        return F.normalize(self.tables[level], dim=-1)

    def logits(self, features: torch.Tensor, level: int) -> torch.Tensor:
        """Cosine similarity of normalized ``features`` (B, dim) to every cell of ``level``, divided by its temperature."""
        return self.scales()[level] * features @ self.normalized(level).T

    def scoring(self) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor] | None]:
        """(per-level cell matrices, per-level scale, per-level bias or None) for :class:`HierarchicalScorer`."""
        return [self.normalized(k).detach() for k in range(self.num_levels)], self.scales().detach(), None


class LinearGeoHead(nn.Module):
    """No geographic embeddings: a linear classifier over the finest cells (paper Table VI ablation)."""

    def __init__(self, num_cells: Sequence[int], dim: int):
        super().__init__()
        if len(num_cells) != 1:
            raise ValueError(f"the linear head classifies one level of cells, got {len(num_cells)} levels")
        self.num_cells = list(num_cells)
        self.fc = nn.Linear(dim, num_cells[0])

    @property
    def num_levels(self) -> int:
        return 1

    def logits(self, features: torch.Tensor, level: int) -> torch.Tensor:
        return self.fc(features)

    def scoring(self) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor] | None]:
        return [self.fc.weight.detach()], torch.ones(1), [self.fc.bias.detach()]


def create_geo_head(head: str, num_cells: Sequence[int], dim: int, init_temperature: float) -> nn.Module:
    """The geographic head named by ``GeoConfig.head``."""
    if head == "embeddings":
        return GeoEmbeddings(num_cells, dim, init_temperature)
    if head == "linear":
        return LinearGeoHead(num_cells, dim)
    raise ValueError(f"unknown geo head {head!r}; use 'embeddings' or 'linear'")
