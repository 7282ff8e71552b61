"""Every registered geographic head: creation, logits per level, the scorer's view of it, its objective and
the checkpoint round trip (the registry loop timm's tests use for models)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geosurge.geo import build_hierarchy
from geosurge.model import GeoSURGE, ModelConfig
from geosurge.model.checkpoint import load_checkpoint, save_checkpoint
from geosurge.model.config import BackboneConfig, FusionConfig, GeoConfig
from geosurge.model.geo_heads import GeoHead, create_geo_head, list_geo_heads
from geosurge.model.hierarchical import HierarchicalScorer

TAU_MAXES = [2000, 500, 150]


def _hierarchy(levels: int):
    rng = np.random.default_rng(0)
    lat = np.r_[rng.normal(48, 2, 3000), rng.uniform(-50, 60, 1000)]
    lon = np.r_[rng.normal(5, 3, 3000), rng.uniform(-180, 180, 1000)]
    return build_hierarchy(lat, lon, tau_min=10, tau_maxes=TAU_MAXES[-levels:])


def _levels(name: str) -> int:
    cls = type(create_geo_head(GeoConfig(embed_dim=4, head=name), [2]))
    return min(len(TAU_MAXES), cls.max_levels or len(TAU_MAXES))


def test_registry():
    assert {"embeddings", "linear"} <= set(list_geo_heads())
    with pytest.raises(ValueError, match="unknown geo head 'mlp'.*embeddings.*linear"):
        create_geo_head(SimpleNamespace(head="mlp", embed_dim=8), [3])


@pytest.mark.parametrize("name", list_geo_heads())
def test_head_logits_scoring_and_loss(name):
    levels = _levels(name)
    num_cells = [3, 5, 7][-levels:]
    torch.manual_seed(0)
    head = create_geo_head(GeoConfig(embed_dim=16, head=name), num_cells)
    assert isinstance(head, GeoHead) and head.num_cells == num_cells and head.num_levels == levels
    feats = F.normalize(torch.randn(6, 16), dim=-1)
    for k, n in enumerate(num_cells):
        assert head.logits(feats, k).shape == (6, n)
    # the scorer's tables, scales and biases reproduce the head's own logits
    scoring = head.scoring()
    assert len(scoring.tables) == levels and scoring.scales.shape == (levels,)
    for k, table in enumerate(scoring.tables):
        bias = scoring.biases[k] if scoring.biases is not None else 0.0
        torch.testing.assert_close(scoring.scales[k] * feats @ table.T + bias, head.logits(feats, k).detach())
    temps = head.temperatures()
    assert temps is None or (temps.shape == (levels,) and bool((temps > 0).all()))
    # the objective: finite, one entry per level, gradients reach the head
    cells = torch.tensor([[i % n for n in num_cells] for i in range(6)])
    loss, per_level, accs = head.loss(feats, cells)
    assert torch.isfinite(loss) and len(per_level) == len(accs) == levels
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())
    # a batch where no sample lies in a kept cell: zero loss, nan per level, still differentiable
    empty, nan_levels, _ = head.loss(feats.detach().requires_grad_(), torch.full((6, levels), -1))
    assert empty.item() == 0.0 and empty.requires_grad and all(np.isnan(nan_levels))


@pytest.mark.parametrize("name", list_geo_heads())
def test_head_through_model_scorer_and_checkpoint(name, tmp_path):
    levels = _levels(name)
    h = _hierarchy(levels)
    cfg = ModelConfig(backbone=BackboneConfig("efficientnet-lite0", image_size=96), fusion=FusionConfig(enabled=False),
                      geo=GeoConfig(embed_dim=16, head=name, tau_min=10, tau_maxes=TAU_MAXES[-levels:]))
    torch.manual_seed(0)
    model = GeoSURGE(cfg, h.num_cells).eval()
    pixels = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        feats, logits = model(pixels)
    assert feats.shape == (2, 16) and [z.shape for z in logits] == [(2, n) for n in h.num_cells]
    scorer = HierarchicalScorer.for_model(model, h)
    for z, s in zip(logits, scorer.level_logits(feats)):
        torch.testing.assert_close(s, z)
    save_checkpoint(tmp_path / "ckpt", model, h)
    back, h2, _, _ = load_checkpoint(tmp_path / "ckpt")
    assert type(back.geo) is type(model.geo) and h2.num_cells == h.num_cells
    for (k, a), (k2, b) in zip(model.geo.state_dict().items(), back.geo.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    with torch.no_grad():
        feats2, logits2 = back(pixels)
    torch.testing.assert_close(feats2, feats)
    for a, b in zip(logits2, logits):
        torch.testing.assert_close(a, b)
