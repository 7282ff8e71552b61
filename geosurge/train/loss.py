"""Training objectives: per-level InfoNCE with in-batch negatives (paper Eq. 1), or cross-entropy."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..model.geo_embedding import GeoEmbeddings


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


def classification_loss(feats: torch.Tensor, cells: torch.Tensor, head) -> tuple[torch.Tensor, list[float], list[float]]:
    """Cross-entropy over all cells of the head's single (finest) level."""
    valid = cells[:, -1] >= 0
    if not valid.any():
        z = feats.sum() * 0.0
        return z, [float("nan")], [float("nan")]
    logits = head.logits(feats[valid], 0).float()
    target = cells[valid, -1]
    loss = F.cross_entropy(logits, target)
    return loss, [loss.item()], [(logits.argmax(1) == target).float().mean().item()]


def geo_loss(model, feats: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, list[float], list[float]]:
    """The objective that matches the model's geographic head."""
    geo = model.geo
    if isinstance(geo, GeoEmbeddings):
        return hierarchical_infonce(feats, cells, geo, gather_cells(cells))
    return classification_loss(feats, cells, geo)
