"""Geographic embeddings (paper §III-C): one learned table and temperature per hierarchy level, trained with
per-level InfoNCE against the batch's cells (paper Eq. 1)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ._registry import GeoHead, HeadScoring, register_geo_head

if TYPE_CHECKING:  # annotations only: config.py checks names against this registry, so no runtime import back
    from ..config import GeoConfig


@register_geo_head("embeddings")
class GeoEmbeddings(GeoHead):
    """``num_cells[l] x dim`` embeddings per level (L2-normalized at use) and a learnable temperature each."""

    def __init__(self, cfg: GeoConfig, num_cells: Sequence[int]):
        super().__init__()
        self.num_cells = list(num_cells)
        dim = cfg.embed_dim
        self.tables = nn.ParameterList(nn.Parameter(torch.randn(n, dim) * dim**-0.5) for n in self.num_cells)
        # log(1/T) as in CLIP's logit_scale: positive by construction, well-scaled gradients.
        self.logit_scale = nn.Parameter(torch.full((len(self.num_cells),), math.log(1.0 / cfg.init_temperature)))

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

    def scoring(self) -> HeadScoring:
        return HeadScoring([self.normalized(k).detach() for k in range(self.num_levels)], self.scales().detach(), None)

    def loss(self, features: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, list[float], list[float]]:
        """Per-level InfoNCE with in-batch negatives, the negatives spanning every process's batch."""
        return hierarchical_infonce(features, cells, self, gather_cells(cells))


def gather_cells(cells: torch.Tensor) -> torch.Tensor:
    """All processes' cell indices (rows padded with -1), so negatives span the global batch."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return cells
    n = torch.tensor([cells.shape[0]], device=cells.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    m = int(max(s.item() for s in sizes))
    padded = torch.full((m, cells.shape[1]), -1, dtype=cells.dtype, device=cells.device)
    padded[: cells.shape[0]] = cells
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat(out)


def hierarchical_infonce(
    feats: torch.Tensor, cells: torch.Tensor, geo: GeoEmbeddings, batch_cells: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[float], list[float]]:
    """Sum over levels of InfoNCE between image features and their cells' embeddings.

    The candidates at a level are the distinct cells of the (global) batch: samples that share a cell
    share one positive column, so they are never each other's negatives. ``cells`` is (B, L) with -1
    where a sample lies in no kept cell of that level (it is left out of that level's term).
    Returns (loss, per-level loss, per-level in-batch accuracy).
    """
    batch_cells = cells if batch_cells is None else batch_cells
    scales = geo.scales()
    total = feats.sum() * 0.0  # stays differentiable when no level has a term in this batch
    losses, accs = [], []
    for k in range(cells.shape[1]):
        valid = cells[:, k] >= 0
        cand = torch.unique(batch_cells[:, k][batch_cells[:, k] >= 0])
        if not valid.any() or cand.numel() == 0:
            losses.append(float("nan"))
            accs.append(float("nan"))
            continue
        target = torch.searchsorted(cand, cells[valid, k])  # cand is sorted and contains every own cell
        logits = scales[k] * feats[valid] @ F.normalize(geo.tables[k][cand], dim=-1).T
        loss = F.cross_entropy(logits.float(), target)
        total = total + loss
        losses.append(loss.item())
        accs.append((logits.argmax(1) == target).float().mean().item())
    return total, losses, accs
