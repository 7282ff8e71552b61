"""The whole pipeline learns: photos whose location is encoded in their content become locatable.

Each of six regions of the globe gets a colour and a stripe direction; photos of a region are noisy
renderings of its code. A short real training run (the same `train()` as the demo) must reach >= 90%
accuracy at 2500 km on held-out photos and clearly beat the same model untrained.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import torch
from PIL import Image

from geosurge.data.records import read_records
from geosurge.eval.evaluate import evaluate_checkpoint
from geosurge.geo import build_hierarchy
from geosurge.model import GeoSURGE
from geosurge.model.checkpoint import save_checkpoint
from geosurge.train.config import TrainConfig
from geosurge.train.trainer import train

REGIONS = [  # (lat, lon) centres, all > 2500 km apart
    (48.8, 2.3), (40.7, -74.0), (-33.9, 151.2), (35.7, 139.7), (-23.5, -46.6), (-1.3, 36.8)
]
COLOURS = [(220, 40, 40), (40, 200, 60), (40, 80, 220), (230, 210, 40), (200, 60, 200), (40, 210, 210)]


def _photo(region: int, rng: np.random.Generator, size: int = 128) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size]
    angle = region * np.pi / len(REGIONS)
    stripes = (np.sin((x * np.cos(angle) + y * np.sin(angle)) / 4.0 + rng.uniform(0, 6.3)) > 0)[..., None]
    base = np.array(COLOURS[region], dtype=np.float64)
    img = np.where(stripes, base, base * 0.35) + rng.normal(0, 25, (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _write(tmp, name: str, per_region: int, seed: int):
    rng = np.random.default_rng(seed)
    (tmp / "img").mkdir(exist_ok=True)
    rows = []
    for r, (lat, lon) in enumerate(REGIONS):
        for k in range(per_region):
            fn = f"{name}_{r}_{k}.png"
            _photo(r, rng).save(tmp / "img" / fn)
            rows.append((fn, lat + rng.normal(0, 1.0), lon + rng.normal(0, 1.0)))
    with (tmp / f"{name}.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("image", "lat", "lon"), *rows])
    return tmp / f"{name}.csv"


def test_pipeline_learns_location_from_content(tmp_path):
    train_csv, val_csv, test_csv = _write(tmp_path, "train", 12, 0), _write(tmp_path, "val", 3, 1), _write(tmp_path, "test", 6, 2)
    d = {
        "model": {"backbone": {"name": "efficientnet-lite0", "image_size": 64, "trainable_blocks": 1},
                  "fusion": {"enabled": False}, "geo": {"embed_dim": 32, "tau_min": 2, "tau_maxes": [40, 12]}},
        "data": {"train_csv": str(train_csv), "val_csv": str(val_csv), "images": str(tmp_path / "img"),
                 "val_images": str(tmp_path / "img"), "view_cache": True, "views": "five", "cache_dir": str(tmp_path / "cache")},
        "optim": {"batch_size": 24, "micro_batch": 24, "epochs": 8, "lr": 3e-3, "lr_gamma": 0.9, "patience": 8},
        "run": {"output": str(tmp_path / "trained"), "progress": False},
    }
    cfg = TrainConfig.from_dict(d)
    train(cfg)
    test, _ = read_records(test_csv, tmp_path / "img")
    # scored on the checkpoint's own views: the five it was trained on
    trained = evaluate_checkpoint(tmp_path / "trained", test, cache_dir=tmp_path / "cache", progress=False)
    assert trained.metrics["views"] == "five"

    # the same architecture and hierarchy, untrained
    tr, _ = read_records(train_csv, tmp_path / "img")
    h = build_hierarchy(tr.lats, tr.lons, 2, [40, 12])
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "untrained", GeoSURGE(cfg.model, h.num_cells).eval(), h)
    untrained = evaluate_checkpoint(tmp_path / "untrained", test, views="five", cache_dir=tmp_path / "cache", progress=False)

    print(f"learnability: trained {trained.metrics}, untrained {untrained.metrics}")
    hist = json.loads((tmp_path / "trained/config.json").read_text())["training"]["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert trained.metrics["n"] == 36
    assert trained.metrics["acc_2500km"] >= 90.0, trained.metrics
    assert trained.metrics["acc_2500km"] >= untrained.metrics["acc_2500km"] + 40.0, (trained.metrics, untrained.metrics)
