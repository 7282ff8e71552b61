"""Geographic-head registry: one family per module, each registering its names (``GeoConfig.head``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..registry import Registry

if TYPE_CHECKING:  # annotations only: config.py checks names against this registry, so no runtime import back
    from ..config import GeoConfig


@dataclass
class HeadScoring:
    """What :class:`~geosurge.model.hierarchical.HierarchicalScorer` needs from a head, ready to use:
    cell logit at level ``l`` = ``scales[l] * features @ tables[l].T + biases[l]`` for normalized features."""

    tables: list[torch.Tensor]  # per level (n_l, dim)
    scales: torch.Tensor  # (levels,)
    biases: list[torch.Tensor] | None  # per level (n_l,), or None for no bias


class GeoHead(nn.Module):
    """Maps normalized visual features to per-level cell logits, and owns the objective that trains it.

    Subclasses take ``(cfg: GeoConfig, num_cells)`` (cells per hierarchy level, coarse to fine), set
    ``num_cells``, and implement :meth:`logits`, :meth:`scoring` and :meth:`loss`.
    """

    num_cells: list[int]
    #: most hierarchy levels the head can represent (None: any number)
    max_levels: int | None = None

    @property
    def num_levels(self) -> int:
        return len(self.num_cells)

    def logits(self, features: torch.Tensor, level: int) -> torch.Tensor:
        """(B, num_cells[level]) logits of normalized ``features`` (B, dim) against every cell of ``level``."""
        raise NotImplementedError

    def scoring(self) -> HeadScoring:
        """Detached per-level tables, scales and biases for inference."""
        raise NotImplementedError

    def loss(self, features: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, list[float], list[float]]:
        """The head's training objective for features (B, dim) and their cells (B, levels; -1 = in no kept cell).

        Returns (loss, per-level loss, per-level accuracy); a level without a term in the batch reports nan."""
        raise NotImplementedError

    def temperatures(self) -> torch.Tensor | None:
        """Per-level temperatures to log while training; None for a head without any."""
        return None


GEO_HEADS: Registry[GeoHead] = Registry("geo head")
#: class decorator: ``@register_geo_head("embeddings")``; the class takes ``(cfg: GeoConfig, num_cells)``
register_geo_head = GEO_HEADS.register
list_geo_heads = GEO_HEADS.names


def create_geo_head(cfg: GeoConfig, num_cells: Sequence[int]) -> GeoHead:
    """Build the head named by ``cfg.head`` over ``num_cells`` cells per level (coarse to fine)."""
    return GEO_HEADS.get(cfg.head)(cfg, num_cells)
