"""Building small real checkpoints for tests (untrained heads on the real offline backbone)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from geosurge.data.images import load_image
from geosurge.geo import build_hierarchy
from geosurge.model import GeoSURGE, ModelConfig
from geosurge.model.checkpoint import save_checkpoint
from geosurge.model.config import BackboneConfig, FusionConfig, GeoConfig, SegmenterConfig
from geosurge.model.encode import build_reference_index, encode_images


def small_config(fusion: bool, shared: Path) -> ModelConfig:
    return ModelConfig(
        backbone=BackboneConfig("efficientnet-lite0"),
        fusion=FusionConfig(enabled=fusion, width=128, num_heads=4, label_samples=4, num_blocks=2),
        geo=GeoConfig(embed_dim=64, tau_min=5, tau_maxes=[400, 100, 30]),
        segmenter=SegmenterConfig("deeplab-ade20k", str(shared / "models/deeplabv3-mobilenetv2-ade20k/model.tflite")),
    )


def make_checkpoint(directory: Path, shared: Path, fusion: bool, n_ref: int = 8, segmenter=None, seed: int = 0) -> Path:
    rows = list(csv.DictReader(open(shared / "data/im2gps3k-dev/train.csv")))
    lat = np.array([float(r["lat"]) for r in rows])
    lon = np.array([float(r["lon"]) for r in rows])
    cfg = small_config(fusion, shared)
    h = build_hierarchy(lat, lon, cfg.geo.tau_min, cfg.geo.tau_maxes)
    torch.manual_seed(seed)
    model = GeoSURGE(cfg, h.num_cells).eval()
    refs = rows[:: max(1, len(rows) // n_ref)][:n_ref]
    imgs = [load_image(shared / "data/im2gps3k-dev/images" / r["image"]) for r in refs]
    maps = [segmenter(im) for im in imgs] if fusion else None
    feats = encode_images(model, imgs, maps)
    ref = build_reference_index(feats, np.array([float(r["lat"]) for r in refs]), np.array([float(r["lon"]) for r in refs]),
                                [r["image"] for r in refs], h)
    return save_checkpoint(directory, model, h, ref, extra={"note": "untrained test checkpoint"})
