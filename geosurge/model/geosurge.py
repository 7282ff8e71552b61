"""The GeoSURGE model: backbone -> (semantic fusion | RGB head) -> feature matched to geo embeddings."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, create_backbone
from .config import ModelConfig
from .fusion import RGBHead, SemanticFusion
from .geo_embedding import GeoEmbeddings


class GeoSURGE(nn.Module):
    def __init__(self, cfg: ModelConfig, num_cells: Sequence[int], pretrained_backbone: bool = True, backbone: Backbone | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone if backbone is not None else create_backbone(cfg.backbone, pretrained_backbone)
        d = self.backbone.hidden_size
        if cfg.fusion.enabled:
            self.fusion = SemanticFusion(d, self.backbone.grid_size, self.backbone.patch_size, cfg.geo.embed_dim, cfg.fusion)
            self.rgb_head = None
        else:
            self.fusion = None
            self.rgb_head = RGBHead(d, cfg.geo.embed_dim)
        self.geo = GeoEmbeddings(num_cells, cfg.geo.embed_dim, cfg.geo.init_temperature)

    @property
    def uses_fusion(self) -> bool:
        return self.fusion is not None

    @property
    def preprocess(self):
        return self.backbone.preprocess

    def encode(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalized visual features (B, embed_dim). ``labels`` (B, S, S) is required with fusion."""
        tokens = self.backbone(pixels)
        if self.fusion is not None:
            if labels is None:
                raise ValueError("this model fuses semantics: pass the segmentation label map (labels)")
            feats = self.fusion(tokens, labels)
        else:
            feats = self.rgb_head(tokens)
        return F.normalize(feats.float(), dim=-1)

    def forward(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Features and, per hierarchy level, logits against every cell (cosine / temperature)."""
        feats = self.encode(pixels, labels)
        return feats, [self.geo.logits(feats, k) for k in range(self.geo.num_levels)]
