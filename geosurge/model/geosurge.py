"""The GeoSURGE model: backbone -> (semantic fusion | RGB head) -> feature matched to geo embeddings."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, create_backbone
from .config import ModelConfig
from .fusion import RGBHead, SemanticFusion
from .geo_heads import create_geo_head


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
        self.geo = create_geo_head(cfg.geo, num_cells)

    @property
    def uses_fusion(self) -> bool:
        return self.fusion is not None

    @property
    def preprocess(self):
        return self.backbone.preprocess

    def frozen_signature(self) -> str:
        """Short hash naming this model's frozen backbone part: models with equal signatures compute the same
        frozen output for the same image, so they may share one frozen forward or one cache of it.

        Frozen backbone weights are never fine-tuned or saved: they are restored from the pretrained source
        the config names. So the whole backbone config (every field, including ones added later) and the
        preprocessing identify the frozen part.
        """
        parts = {"backbone": asdict(self.cfg.backbone), "preprocess": asdict(self.preprocess)}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def encode(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalized visual features (B, embed_dim). ``labels`` (B, S, S) is required with fusion."""
        return self.encode_hidden(self.backbone.forward_frozen(pixels), labels)

    def encode_hidden(self, hidden: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """As :meth:`encode`, from the frozen backbone part's output (training from cached views)."""
        rgb_tokens = self.backbone.forward_trainable(hidden)
        if self.fusion is not None:
            if labels is None:
                raise ValueError("this model fuses semantics: pass the segmentation label map (labels)")
            feats = self.fusion(rgb_tokens, labels)
        else:
            feats = self.rgb_head(rgb_tokens)
        return F.normalize(feats.float(), dim=-1)

    def forward(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Features (B, embed_dim) and, per hierarchy level, logits against every cell (see :meth:`logits`).

        Training calls :meth:`encode` or :meth:`encode_hidden` (its objective computes its own logits)."""
        feats = self.encode(pixels, labels)
        return feats, self.logits(feats)

    def logits(self, feats: torch.Tensor) -> list[torch.Tensor]:
        """Per hierarchy level, the geographic head's logits of normalized features against every cell: list of (B, n_l)."""
        return [self.geo.logits(feats, k) for k in range(self.geo.num_levels)]
