"""Inference cost of GeoSURGE in the paper's configuration, on CPU (issue: the model).

CLIP ViT-L/14-336 (random weights: the architecture is what costs), 3 fusion blocks (query 128,
latent 64, width 1024), 7 hierarchy levels with the cell counts the paper's taus give on MP-16-like
points (drawn in GeoEstimation's published MP-16 cells). Backbone and fusion + hierarchical matching are
timed alternately in the same run, and the ratio printed.

    python benchmarks/paper_inference.py [--rounds 5] [--batch 1] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from geosurge.geo import PAPER_TAU_MAXES, PAPER_TAU_MIN, build_hierarchy, load_partition_csv, s2
from geosurge.model import GeoSURGE, ModelConfig
from geosurge.model.config import BackboneConfig
from geosurge.model.hierarchical import HierarchicalScorer

ROOT = Path(__file__).resolve().parents[1]


def mp16_hierarchy(shared: Path):
    table = load_partition_csv(shared / "data/mp16/cells_50_1000.csv", on_bad_token="skip")
    pts = s2.sample_in_cells(table.ids, table.counts, np.random.default_rng(0))
    h = build_hierarchy(pts[:, 0], pts[:, 1], PAPER_TAU_MIN, PAPER_TAU_MAXES)
    return h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    h = mp16_hierarchy(args.shared)
    print(f"hierarchy (paper taus on MP-16-like points): {h.num_cells} cells, {sum(h.num_cells):,} in all")
    cfg = ModelConfig(backbone=BackboneConfig("clip"))
    torch.manual_seed(0)
    model = GeoSURGE(cfg, h.num_cells, pretrained_backbone=False).eval()
    scorer = HierarchicalScorer.for_model(model, h)
    n_fusion = sum(p.numel() for p in model.fusion.parameters())
    print(f"CLIP-L/14-336 backbone {sum(p.numel() for p in model.backbone.parameters()) / 1e6:.0f} M params, "
          f"fusion {n_fusion / 1e6:.1f} M params, {cfg.fusion.num_blocks} blocks; torch threads {torch.get_num_threads()}")

    b = args.batch
    pixels = torch.randn(b, 3, 336, 336)
    labels = torch.randint(0, 151, (b, 336, 336))

    def backbone():
        return model.backbone(pixels)

    def head(tokens):
        f = torch.nn.functional.normalize(model.fusion(tokens, labels), dim=-1)
        scores = scorer.cumulative_log_scores(f)[-1]
        return scores.topk(5, dim=1)

    with torch.inference_mode():
        tokens = backbone()  # warm-up
        head(tokens)
        t_bb, t_head = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            tokens = backbone()
            t1 = time.perf_counter()
            head(tokens)
            t2 = time.perf_counter()
            t_bb.append(t1 - t0)
            t_head.append(t2 - t1)
        # hierarchical inference alone, over all cells, per image
        feats = torch.nn.functional.normalize(torch.randn(64, cfg.geo.embed_dim), dim=-1)
        t_h1, t_h64 = [], []
        for _ in range(20):
            t0 = time.perf_counter()
            scorer.cumulative_log_scores(feats[:1])[-1].topk(5, dim=1)
            t1 = time.perf_counter()
            scorer.cumulative_log_scores(feats)[-1].topk(5, dim=1)
            t2 = time.perf_counter()
            t_h1.append(t1 - t0)
            t_h64.append(t2 - t1)

    bb, hd = statistics.median(t_bb), statistics.median(t_head)
    print(f"backbone forward (batch {b}): median {bb * 1e3:.0f} ms over {args.rounds} rounds")
    print(f"fusion + hierarchical matching (batch {b}): median {hd * 1e3:.1f} ms")
    print(f"overhead over the backbone: {100 * hd / bb:.1f}% (target <= 10%)")
    print(f"hierarchical inference over all {sum(h.num_cells):,} cells: {statistics.median(t_h1) * 1e3:.2f} ms for 1 image, "
          f"{statistics.median(t_h64) / 64 * 1e3:.2f} ms per image in a batch of 64 (target < 5 ms)")


if __name__ == "__main__":
    main()
