"""How far can the choice of a prediction from the model's scores go?  `python benchmarks/decision_bound.py`

An *oracle* sweep, tuned on the test set itself, so none of its figures is a result: it bounds what
any decision rule (temperature, cell prior, expected-distance point, confidence fallback) can get out
of the shipped checkpoint's scores on test.csv, and compares that with the train photos' geographic
median. If even the test-tuned best rule cannot beat the median at 750 and 2500 km while staying
ahead at 200 km, no rule tuned honestly (on train or val) can either: the scores, not the decision,
are what is missing.

Rules, for a temperature T (per-level softmax of score / T, product down the hierarchy, times the
training frequency of the finest cell, i.e. the posterior when the InfoNCE scores are likelihood
ratios; computed by the package: HierarchicalScorer's per-level log-probabilities, combined by
geosurge.model.posterior.combine with level weights 1 / T and prior weight 1):
  map      the centre of the most probable finest cell (the paper's rule);
  median   the point minimizing the expected great-circle error under that posterior;
  hybrid   map when its posterior probability is at least a threshold, median otherwise
           (thresholds at quantiles of the confidence);
  mass@R   the finest-cell centre holding the most posterior mass within R km (best for acc@R).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geosurge.data.records import read_records  # noqa: E402
from geosurge.eval.baselines import geographic_median  # noqa: E402
from geosurge.eval.evaluate import checkpoint_features  # noqa: E402
from geosurge.geo.distance import haversine_km, spherical_median  # noqa: E402
from geosurge.geo.hierarchy import Hierarchy  # noqa: E402
from geosurge.model.config import PosteriorConfig  # noqa: E402
from geosurge.model.hierarchical import HierarchicalScorer  # noqa: E402
from geosurge.model.posterior import Posterior, combine, training_counts  # noqa: E402
from geosurge.model.variants import FUSION, VARIANTS  # noqa: E402
from geosurge.train.config import load_train_config  # noqa: E402

RADII = (1, 25, 200, 750, 2500)
TEMPERATURES = (1, 2, 4, 8, 16, 32, 64, 128, float("inf"))


def accuracy(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    d = haversine_km(pred[:, 0], pred[:, 1], true[:, 0], true[:, 1])
    return np.array([100.0 * np.mean(d <= r) for r in RADII])


def level_log_probs(args, cfg, test) -> tuple[list[torch.Tensor], np.ndarray, Hierarchy]:
    """Per-level log-probabilities at T = 1 (the scorer's), averaged over the chosen variants; the test rows read."""
    per_variant = []
    for name in list(VARIANTS) if args.variant == "both" else [args.variant]:
        model, hierarchy, feats, keep, _, _ = checkpoint_features(
            args.checkpoint or cfg.run.output, test, views="ten", fusion=VARIANTS[name].fusion,
            labels=cfg.data.labels, cache_dir=cfg.data.cache_dir)
        per_variant.append((HierarchicalScorer.for_model(model, hierarchy).level_log_probs(feats), keep, hierarchy))
    first = per_variant[0]
    if any(len(k) != len(first[1]) or (k != first[1]).any() or not np.array_equal(h.levels[-1].centroids, first[2].levels[-1].centroids)
           for _, k, h in per_variant):
        raise SystemExit("the variants differ in test photos read or in hierarchy; cannot average them")
    return [sum(lv) / len(per_variant) for lv in zip(*(lp for lp, _, _ in per_variant))], first[1], first[2]


def log_posterior(posterior: Posterior, log_probs: list[torch.Tensor], t: float, prior_weight: float = 1.0) -> torch.Tensor:
    """The package's posterior with every level's softmax at temperature ``t`` (level weight 1 / t; the
    per-level normalizers cancel in the final softmax) and the prior at ``prior_weight``."""
    weights = torch.full((len(log_probs),), 0.0 if np.isinf(t) else 1.0 / t, dtype=torch.float64)
    return combine(posterior.log_prior, log_probs, posterior.ancestors, weights, prior_weight)


def rules_at(posterior: Posterior, log_post: torch.Tensor, true: np.ndarray, tag: str) -> list[tuple[str, np.ndarray]]:
    """(rule, accuracies) of every decision rule under one posterior."""
    centres = posterior.centroids
    post = log_post.exp()
    conf, best = post.max(1)
    map_pt = centres[best.numpy()]
    val, idx = post.topk(min(256, post.shape[1]), dim=1)
    med_pt = spherical_median(torch.from_numpy(centres)[idx], val).numpy()
    rows = [(f"T={tag} map", accuracy(map_pt, true)), (f"T={tag} median", accuracy(med_pt, true))]
    for q in (0.5, 0.8, 0.9, 0.95, 0.98):
        pick = (conf.numpy() >= float(np.quantile(conf.numpy(), q)))[:, None]
        rows.append((f"T={tag} hybrid top {100 * (1 - q):.0f}% map", accuracy(np.where(pick, map_pt, med_pt), true)))
    for r in (200, 750, 2500):
        rows.append((f"T={tag} mass@{r}", accuracy(centres[posterior.decide(log_post, f"within:{r}")], true)))
    return rows


def print_table(title: str, paper: np.ndarray, med: np.ndarray, med_acc: np.ndarray, rows: list[tuple[str, np.ndarray]]) -> None:
    print(title + "\n")
    print("| | " + " | ".join(f"{r} km" for r in RADII) + " |")
    print("|---|" + "---|" * len(RADII))
    print("| paper rule (T=1, no prior, map) | " + " | ".join(f"{a:.1f}" for a in paper) + " |")
    print(f"| train geographic median ({med[0]:.2f}, {med[1]:.2f}) | " + " | ".join(f"{a:.1f}" for a in med_acc) + " |")
    for j, r in enumerate(RADII):
        name, a = max(rows, key=lambda x: (x[1][j], x[1].sum()))
        print(f"| best rule at {r} km: {name} | " + " | ".join(f"{v:.1f}" for v in a) + " |")
    beats = [(n, a) for n, a in rows if a[3] > med_acc[3] and a[4] > med_acc[4]]
    print()
    if beats:
        n, a = max(beats, key=lambda x: x[1][2])
        print(f"best acc@200 among rules beating the median at 750 and 2500 km: {n}: {a[2]:.1f} %")
    else:
        print("no rule, even tuned on test, beats the median at both 750 and 2500 km")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/demo.yaml"))
    ap.add_argument("--checkpoint", default=None, help="the trained pair (default: the config's run.output)")
    ap.add_argument("--variant", choices=[*VARIANTS, "both"], default=FUSION,
                    help="both: the two variants' per-level log-probabilities averaged (an ensemble)")
    ap.add_argument("--test-csv", default=str(ROOT.parent / "shared/data/im2gps3k-dev/test.csv"))
    args = ap.parse_args()

    cfg = load_train_config(args.config)
    test, _ = read_records(args.test_csv)
    train, _ = read_records(cfg.data.train_csv, cfg.data.images)
    log_probs, keep, hierarchy = level_log_probs(args, cfg, test)
    true = np.stack([test.lats[keep], test.lons[keep]], axis=1)
    # The sweep's own rules, not the checkpoint's fitted posterior: only its prior, ancestors and decision are used.
    posterior = Posterior(PosteriorConfig(), hierarchy, training_counts(hierarchy, train.lats, train.lons))
    paper = accuracy(posterior.centroids[log_posterior(posterior, log_probs, 1.0, prior_weight=0.0).argmax(1).numpy()], true)
    rows = []
    for t in TEMPERATURES:
        rows += rules_at(posterior, log_posterior(posterior, log_probs, t), true, "inf" if np.isinf(t) else f"{t:g}")
    med = np.array(geographic_median(train.lats, train.lons))
    med_acc = accuracy(np.repeat(med[None], len(true), 0), true)
    print_table(f"{len(true)} test photos, {args.variant} variant of {args.checkpoint or cfg.run.output}, ten crops; "
                f"{len(rows)} decision rules, tuned on test (oracle)", paper, med, med_acc, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
