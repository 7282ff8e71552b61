"""Geographic-head registry: one family per module, each registering its names (``GeoConfig.head``)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

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


_REGISTRY: dict[str, Callable[[GeoConfig, Sequence[int]], GeoHead]] = {}


def register_geo_head(*names: str) -> Callable:
    """Class decorator: ``@register_geo_head("embeddings")``; the class takes ``(cfg: GeoConfig, num_cells)``."""

    def deco(cls):
        for n in names:
            _REGISTRY[n] = cls
        return cls

    return deco


def list_geo_heads() -> list[str]:
    return sorted(_REGISTRY)


def create_geo_head(cfg: GeoConfig, num_cells: Sequence[int]) -> GeoHead:
    """Build the head named by ``cfg.head`` over ``num_cells`` cells per level (coarse to fine)."""
    if cfg.head not in _REGISTRY:
        raise ValueError(f"unknown geo head {cfg.head!r}; available: {list_geo_heads()}")
    return _REGISTRY[cfg.head](cfg, num_cells)
