"""Could a better prior alone reach the best constants? Priors fitted on the other folds' photographers only.

For each photographer-grouped fold (the folds of ``benchmarks/crossval.py``), a prior over the finest cells
is built from MP-16 and/or the other folds' photos, and the answer is the prior's own decision (no image is
looked at): ``within:750`` (the point holding the most prior mass within 750 km) or ``median`` (least
expected distance). Mixtures: the training photos' share of each level-l cell (photo-weighted or each
photographer weighing the same, +0.5 smoothing), spread inside the cell by MP-16's density.

Run:  python benchmarks/prior_mixture.py [--config configs/demo.yaml]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geosurge.eval.cv import grouped_folds, score  # noqa: E402
from geosurge.geo.distance import haversine_km, pairwise_haversine_km  # noqa: E402
from geosurge.geo.hierarchy import Hierarchy, build_hierarchy  # noqa: E402
from geosurge.geo.prior import read_photo_density  # noqa: E402
from geosurge.train.config import load_train_config  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "im2gps3k-dev"


def dev_points() -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) lat/lon and photographer of all dev photos (train + val + test)."""
    rows = [r for split in ("train", "val", "test") for r in csv.DictReader(open(DEV / f"{split}.csv", newline=""))]
    return np.array([[float(r["lat"]), float(r["lon"])] for r in rows]), np.array([r["author"] for r in rows])


def level_prior(h: Hierarchy, cells: np.ndarray, weights: np.ndarray, level: int, mp16: np.ndarray) -> np.ndarray:
    """The training photos' (smoothed) share of each level-``level`` cell, spread inside it by MP-16's density."""
    anc, n = h.ancestors()[:, level], h.num_cells[level]
    c = cells[:, level]
    share = np.bincount(c[c >= 0], weights=weights[c >= 0], minlength=n) + 0.5 * weights.mean()
    share /= share.sum()
    inside = np.bincount(anc, weights=mp16, minlength=n)
    return share[anc] * mp16 / inside[anc]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    args = ap.parse_args()
    cfg = load_train_config(ROOT / args.config)
    truth, groups = dev_points()
    folds = grouped_folds(groups, 5, cfg.run.seed)
    g = cfg.model.geo
    h = build_hierarchy(*read_photo_density(ROOT / g.partition).sample_points(), g.tau_min, g.tau_maxes)
    cells = h.assign(truth[:, 0], truth[:, 1])
    mp16 = h.finest.counts / h.finest.counts.sum()
    cen = h.finest.centroids
    dist = pairwise_haversine_km(cen[:, 0], cen[:, 1], cen[:, 0], cen[:, 1])
    near = (dist <= 750).astype(np.float64)
    print("| prior (answers without looking at the photo) | decision | 200 km | 750 km | 2500 km | balanced 750 km |")
    print("|---|---|---|---|---|---|")
    specs = [("MP-16", None, False)] + [(f"training photos, level {l + 1}{', photographers balanced' if bal else ''}", l, bal)
                                        for bal in (False, True) for l in (0, 2, 4, 6)]
    for name, level, balanced in specs:
        for rule in ("within:750", "median"):
            answer = np.zeros(len(truth), np.int64)
            for k in range(folds.max() + 1):
                tr = folds != k
                _, gi = np.unique(groups[tr], return_inverse=True)
                w = 1.0 / np.bincount(gi)[gi] if balanced else np.ones(tr.sum())
                prior = mp16 if level is None else level_prior(h, cells[tr], w, level, mp16)
                answer[folds == k] = np.argmax(near @ prior) if rule == "within:750" else np.argmin(dist @ prior)
            s = score(haversine_km(cen[answer, 0], cen[answer, 1], truth[:, 0], truth[:, 1]), groups)
            print(f"| {name} | {rule} | {s.acc[200]:.1f} | {s.acc[750]:.1f} | {s.acc[2500]:.1f} | {s.balanced[750]:.1f} |")


if __name__ == "__main__":
    main()
