"""Photographer-grouped K-fold cross-validation over all 1,985 dev photos (train + val + test).

Every photo is scored once by a model that never saw its photographer. The recipe is the config's
(``configs/demo.yaml``: frozen backbone, so the backbone and label lattices are cached once for all photos
and every fold trains only the fusion / RGB head and the geographic embeddings). On the out-of-fold scores:

* the posterior's per-level weights, the decision rule and the calibration maps are fitted by cross-fitting
  (for fold k, on the out-of-fold scores of the other folds only) and judged on fold k;
* baselines on exactly the same photos and folds: MP-16's densest cell, its photo-weighted spherical
  median and best point for each radius, the fold's training median, 1-NN and a linear probe on the
  pooled backbone features, and the GeoEstimation peer (its published predictions);
* ``--ablations``: the paper's Tables VI (linear head), VII (depth 1/3/5) and VIII (fusion off), same folds.

The training, the posterior fit and its judgement are the package's (``geosurge.train.crossval``,
``geosurge.eval.posterior_cv``): the very code ``geosurge train`` runs when its config has ``cv:``, which is what
builds the shipped checkpoint. This script only reads and reports; it writes no checkpoint.

Run:  python benchmarks/crossval.py --config configs/demo.yaml [--ablations] [--docs]
Writes runs/cv/results.md, runs/cv/report.json, docs/results-reliability.png (with --docs: docs/results.md).
"""
from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geosurge.data.labels import LabelStore  # noqa: E402
from geosurge.data.records import read_records  # noqa: E402
from geosurge.eval.cv import (RADII_KM, answer_spread, bootstrap_mean, expected_calibration_error, fit_isotonic, fit_logistic,  # noqa: E402,F401
                              fit_level_weights, grouped_folds, reliability, score)
# the posterior's fit and judgement, and a fold's training: the package's (what `geosurge train` runs with cv:),
# re-exported under the names other scripts import from here
from geosurge.eval.posterior_cv import (CALIBRATORS, DECISIONS, OutOfFold, PosteriorFit,  # noqa: E402,F401
                                        chances_leaving_photographers_out, evaluate_posterior, fit_calibration,
                                        fit_posterior, hit_and_mass, log_posterior_of, oof_ratios)
from geosurge.files import atomic_write  # noqa: E402
from geosurge.geo.distance import haversine_km, spherical_median  # noqa: E402
from geosurge.geo.hierarchy import Hierarchy, build_hierarchy  # noqa: E402
from geosurge.geo.prior import read_photo_density  # noqa: E402
from geosurge.model.config import PosteriorConfig  # noqa: E402
from geosurge.model.geosurge import GeoSURGE  # noqa: E402
from geosurge.model.posterior import Posterior, combine  # noqa: E402
from geosurge.model.variants import FUSION, VARIANTS  # noqa: E402
from geosurge.model.views import ViewSet, load_or_build_views  # noqa: E402
from geosurge.train.config import load_train_config  # noqa: E402
from geosurge.train.crossval import out_of_fold, subset_views, train_fold, variant_config  # noqa: E402,F401

DEV = ROOT.parent / "shared" / "data" / "im2gps3k-dev"
PEER = ROOT.parent / "shared" / "data" / "peers" / "geoestimation-im2gps3k" / "ISNs_M-fstar-S3.csv"
OUT = ROOT / "runs" / "cv"
#: how the posterior is fitted (--calibration, --fit-prior-weight). The prior's exponent stays 1 by default: under
#: CV it fitted 0.8-0.94, moved accuracy within noise and made the 2,500 km chances worse calibrated (docs/results.md)
HOW = PosteriorFit()


# ------------------------------------------------------------------------------------------ data
def dev_records(out: Path):
    """All dev photos in one list (the three CSVs, keeping author and split)."""
    rows = []
    for split in ("train", "val", "test"):
        with open(DEV / f"{split}.csv", newline="") as f:
            rows += [{**r, "split": split} for r in csv.DictReader(f)]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dev.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "author", "lat", "lon", "split"])
        w.writeheader()
        w.writerows(rows)
    rec, skipped = read_records(path, DEV / "images")
    if skipped.total:
        raise SystemExit(f"dev rows skipped: {skipped.summary()}")
    return rec, np.array([r["author"] for r in rows]), np.array([r["split"] for r in rows])


subset = subset_views  # the name this script used before the package held it


def pooled(views: ViewSet, chunk: int = 128) -> torch.Tensor:
    """Pooled backbone features (mean over the map, normalized, averaged over views): 1-NN and the probe."""
    out = []
    for s in range(0, len(views), chunk):
        h = views.hidden[s : s + chunk].float().mean((-1, -2))  # (n, V, C)
        out.append(F.normalize(F.normalize(h, dim=-1).mean(1), dim=-1))
    return torch.cat(out)


# ------------------------------------------------------------------------------------------ models
def linear_probe(x: torch.Tensor, cells: np.ndarray, n_cells: int, steps: int = 300, wd: float = 1e-3) -> torch.nn.Linear:
    """Multinomial logistic regression of the finest cell on pooled backbone features."""
    torch.manual_seed(0)
    ok = torch.from_numpy(cells >= 0)
    head = torch.nn.Linear(x.shape[1], n_cells)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=wd)
    y = torch.from_numpy(cells)[ok]
    for _ in range(steps):
        loss = F.cross_entropy(head(x[ok] * 10), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def cross_validate(cfg, rec, folds: np.ndarray, hierarchy: Hierarchy, views: ViewSet, epochs: int, tag: str, reuse: bool = False) -> OutOfFold:
    """Out-of-fold per-level logits of the recipe, and each fold's training counts per cell (saved under
    runs/cv/oof-<tag>.npz; ``reuse`` reads them back instead of training, to refit the posterior only)."""
    # the recipe's model config in the name: --reuse must never read another backbone's or head's scores
    recipe = hashlib.sha256(json.dumps(asdict(cfg.model), sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = OUT / f"oof-{tag.replace(' ', '_').replace('(', '').replace(')', '')}-{recipe}.npz"
    key = np.array([len(rec), int(folds.max()) + 1, epochs, *hierarchy.num_cells])
    if reuse and path.is_file():
        z = np.load(path, allow_pickle=False)
        if np.array_equal(z["key"], key):
            n_levels, k = len(hierarchy.levels), int(folds.max()) + 1
            return OutOfFold([z[f"logits{i}"] for i in range(n_levels)], [[z[f"counts{f}_{i}"] for i in range(n_levels)] for f in range(k)],
                             float(z["seconds"]))
        print(f"{path} is from another setting: training again")
    c = copy.deepcopy(cfg)
    c.optim.epochs = epochs
    run = out_of_fold(c, rec, folds, hierarchy, views, tag)
    arrays = {f"logits{i}": z for i, z in enumerate(run.logits)}
    arrays.update({f"counts{f}_{i}": n for f, ns in enumerate(run.counts) for i, n in enumerate(ns)})
    np.savez(path, key=key, seconds=run.seconds, **arrays)
    print(f"[{tag}] {int(folds.max()) + 1} folds in {run.seconds:.0f} s", flush=True)
    return run


# ------------------------------------------------------------------------------------------ baselines
def baselines(rec, folds, hierarchy, feats, cells, truth) -> dict[str, np.ndarray]:
    """Predicted points (n, 2) of every baseline, each fold's from that fold's training photos only."""
    dens = read_photo_density(ROOT.parent / "shared" / "data" / "mp16" / "cells_50_1000.csv")
    n = len(rec)
    out = {"MP-16 densest cell": np.tile(dens.densest(), (n, 1)), "MP-16 spherical median": np.tile(dens.median(), (n, 1))}
    for r in (25, 200, 750, 2500):
        lat, lon, share = dens.best_point(r)
        out[f"MP-16 best point for {r} km ({lat:.2f}, {lon:.2f})"] = np.tile((lat, lon), (n, 1))
    med, nn, probe = (np.zeros((n, 2)) for _ in range(3))
    fin = cells[:, -1]
    for k in range(folds.max() + 1):
        te, tr = np.flatnonzero(folds == k), np.flatnonzero(folds != k)
        med[te] = spherical_median(truth[tr], iterations=300)
        nn[te] = truth[tr][(feats[te] @ feats[tr].T).argmax(1).numpy()]
        head = linear_probe(feats[tr], fin[tr], len(hierarchy.finest))
        with torch.no_grad():
            logits = head(feats[te] * 10)
        trained = torch.from_numpy(np.bincount(fin[tr][fin[tr] >= 0], minlength=len(hierarchy.finest)) > 0)
        probe[te] = hierarchy.finest.centroids[logits.masked_fill(~trained, -1e9).argmax(1).numpy()]
    out["train median (of each fold's training photos)"] = med
    out["1-NN, pooled backbone features"] = nn
    out["linear probe over the finest cells, pooled backbone features"] = probe
    return out


def peer_points(rec) -> tuple[np.ndarray, np.ndarray]:
    """GeoEstimation's published predictions for the dev photos it covers: (rows, points)."""
    if not PEER.is_file():
        return np.zeros(0, np.int64), np.zeros((0, 2))
    pos = {i: k for k, i in enumerate(rec.ids)}
    rows, pts = [], []
    with open(PEER, newline="") as f:
        for r in csv.DictReader(f):
            if r["img_id"] in pos:
                rows.append(pos[r["img_id"]])
                pts.append((float(r["predicted_lat"]), float(r["predicted_long"])))
    return np.asarray(rows, np.int64), np.asarray(pts)


# ------------------------------------------------------------------------------------------ report
def row(name: str, dist: np.ndarray, groups: np.ndarray, points: np.ndarray) -> dict:
    """A table row of answers ``points`` at distances ``dist`` from the truth."""
    s = score(dist, groups)
    distinct, top = answer_spread(points)
    return {"name": name, **{f"acc_{r}": s.acc[r] for r in RADII_KM}, **{f"lo_{r}": s.low[r] for r in RADII_KM},
            **{f"hi_{r}": s.high[r] for r in RADII_KM}, **{f"bal_{r}": s.balanced[r] for r in RADII_KM},
            "median_km": s.median_km, "n": s.n, "distinct": distinct, "top_pct": top}


def answer_row(name: str, points: np.ndarray, truth: np.ndarray, groups: np.ndarray) -> dict:
    return row(name, dist_of(points, truth), groups, points)


def table(rows: list[dict]) -> str:
    head = ("| model | " + " | ".join(f"{r} km" for r in RADII_KM)
            + " | median km | balanced 200 / 750 / 2500 km | distinct answers (most common, % of photos) | n |")
    lines = [head, "|" + "---|" * (len(RADII_KM) + 5)]
    for r in rows:
        cells = [f"{r[f'acc_{d}']:.1f} [{r[f'lo_{d}']:.1f}, {r[f'hi_{d}']:.1f}]" for d in RADII_KM]
        bal = " / ".join(f"{r[f'bal_{d}']:.1f}" for d in (200, 750, 2500))
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {r['median_km']:.0f} | {bal} | {r['distinct']} ({r['top_pct']:.0f}) | {r['n']} |")
    return "\n".join(lines)


def dist_of(points: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return haversine_km(points[:, 0], points[:, 1], truth[:, 0], truth[:, 1])


def plot_reliability(probs: dict, hits: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(RADII_KM), figsize=(3.2 * len(RADII_KM), 3.4))
    for ax, r in zip(axes, RADII_KM):
        conf, freq, n = reliability(probs[r], hits[r])
        ax.plot([0, 1], [0, 1], color="0.7", lw=1)
        ax.scatter(conf, freq, s=12 + 120 * n / n.max())
        ax.plot(conf, freq)
        ax.set(title=f"within {r} km (ECE {expected_calibration_error(probs[r], hits[r]):.1f})", xlim=(0, 1), ylim=(0, 1),
               xlabel="stated chance", ylabel="observed frequency" if r == RADII_KM[0] else None)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def judge(cfg, rec, groups, folds, hierarchy, views, epochs, tag, reuse=False) -> dict:
    """Train the recipe under CV, fit the posterior by cross-fitting, and score its rules."""
    run = cross_validate(cfg, rec, folds, hierarchy, views, epochs, tag, reuse)
    truth = np.stack([rec.lats, rec.lons], 1)
    true_fin = hierarchy.assign(rec.lats, rec.lons)[:, -1]
    post = Posterior(PosteriorConfig(enabled=True), hierarchy, run.counts[0])
    ratios = {beta: oof_ratios(run, folds, beta) for beta in (0.0, 1.0)}
    res = evaluate_posterior(post, ratios, folds, true_fin, truth, groups, HOW)
    cen = post.centroids
    rows = [answer_row(f"{tag}: CV-chosen decision per fold", cen[res["answer"]["default"]], truth, groups)]
    rows += [answer_row(f"{tag}: posterior, decision {rule}", cen[res["answer"][rule]], truth, groups) for rule in DECISIONS]
    paper = combine(torch.zeros_like(post.log_prior), ratios[0.0], post.ancestors, torch.ones(len(hierarchy.levels), dtype=torch.float64))
    rows.append(answer_row(f"{tag}: paper product rule (no prior, T as trained)", cen[paper.argmax(1).numpy()], truth, groups))
    return {"run": run, "res": res, "rows": rows, "post": post, "ratios": ratios, "truth": truth, "true_fin": true_fin}


def ablations(cfg, tag: str, rec, groups, folds, hierarchy: Hierarchy, views: ViewSet, epochs: int, reuse: bool) -> list[dict]:
    """The paper's Tables VII (depth 1 / 3 / 5) and VI (a linear classifier over the finest cells instead of
    geographic embeddings) under the same folds, posterior and cross-fitted decision: one row each."""
    out = []
    for depth in (1, 3, 5):
        out += judge(cfg, rec, groups, folds, depth_hierarchy(hierarchy, depth), views, epochs, f"{tag} depth-{depth}", reuse)["rows"][:1]
    lin = copy.deepcopy(cfg)
    lin.model.geo.head = "linear"
    out += judge(lin, rec, groups, folds, finest_only(hierarchy), views, epochs, f"{tag} no-geo-embeddings (linear head)", reuse)["rows"][:1]
    return out


def depth_hierarchy(h: Hierarchy, depth: int) -> Hierarchy:
    return Hierarchy(h.tau_min, h.levels[:depth], h.n_samples)


def finest_only(h: Hierarchy) -> Hierarchy:
    f = copy.copy(h.finest)
    f.parents = np.full(len(f), -1, np.int64)
    return Hierarchy(h.tau_min, [f], h.n_samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--folds", type=int, default=None, help="default: the config's cv.folds (5 when it has none)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per fold (default: the config's optim.epochs)")
    ap.add_argument("--ablations", action="store_true", help="also Tables VI, VII, VIII under the same folds")
    ap.add_argument("--docs", action="store_true", help="rewrite the generated block of docs/results.md")
    ap.add_argument("--limit", type=int, default=None, help="every n-th photo only (a quick smoke run)")
    ap.add_argument("--fit-prior-weight", action="store_true", help="also fit the exponent of the MP-16 prior (default: 1)")
    ap.add_argument("--calibration", choices=sorted(CALIBRATORS), default="logistic",
                    help="map from posterior mass to stated chance: isotonic (pool adjacent violators) or logistic (Platt)")
    ap.add_argument("--reuse", action="store_true", help="reuse the out-of-fold scores saved by an earlier run with the same setting")
    args = ap.parse_args()
    global HOW
    HOW = PosteriorFit(args.calibration, args.fit_prior_weight)
    cfg = load_train_config(ROOT / args.config)
    args.folds = args.folds or cfg.cv.folds or 5
    epochs = args.epochs or cfg.optim.epochs
    rec, groups, splits = dev_records(OUT)
    folds = grouped_folds(groups, args.folds, cfg.run.seed)
    g = cfg.model.geo
    hierarchy = build_hierarchy(*read_photo_density(ROOT / g.partition).sample_points(), g.tau_min, g.tau_maxes)
    print(f"{len(rec)} photos, {len(np.unique(groups))} photographers, folds of {np.bincount(folds).tolist()} photos; "
          f"hierarchy {hierarchy.num_cells}", flush=True)
    store = LabelStore(ROOT / cfg.data.labels, cfg.model.segmenter)
    fus = copy.deepcopy(cfg)
    fus.model.fusion.enabled = True
    views = load_or_build_views(GeoSURGE(fus.model, hierarchy.num_cells), rec, store, ROOT / cfg.data.cache_dir, views=cfg.data.views)
    if len(views) != len(rec):
        raise SystemExit(f"{len(rec) - len(views)} photos lack views or label maps")
    if args.limit:
        rows = np.arange(0, len(rec), args.limit)
        rec, groups, splits, folds, views = rec.subset(rows), groups[rows], splits[rows], folds[rows], subset(views, rows, True)
    truth = np.stack([rec.lats, rec.lons], 1)
    cells = hierarchy.assign(rec.lats, rec.lons)

    results, rows = {}, []
    for variant in VARIANTS.values():
        results[variant.name] = judge(variant_config(cfg, variant.name), rec, groups, folds, hierarchy, views, epochs, variant.name, args.reuse)
        rows += results[variant.name]["rows"]
    feats = pooled(views)
    base = baselines(rec, folds, hierarchy, feats, cells, truth)
    rows += [answer_row(name, p, truth, groups) for name, p in base.items()]
    prow, ppts = peer_points(rec)
    if prow.size:
        rows.append(answer_row(f"GeoEstimation peer (MP-16, published predictions; {prow.size} photos)", ppts, truth[prow], groups[prow]))

    ablation_rows = []
    for variant in VARIANTS if args.ablations else ():
        ablation_rows.append(results[variant]["rows"][0])
        ablation_rows += ablations(variant_config(cfg, variant), variant, rec, groups, folds, hierarchy, views, epochs, args.reuse)
    report(args, cfg, results, rows, ablation_rows, groups, folds, splits, epochs, hierarchy)


def calibration_figures(res: dict, truth: np.ndarray, cen: np.ndarray, groups: np.ndarray) -> tuple[dict, dict, dict, dict]:
    """Hits, ECE (photo-weighted and photographer-balanced) and (mean stated, observed) % per radius."""
    d = dist_of(cen[res["answer"]["default"]], truth)
    hits = {r: d <= r for r in RADII_KM}
    ece = {r: expected_calibration_error(res["prob"][r], hits[r]) for r in RADII_KM}
    balanced = {r: expected_calibration_error(res["prob"][r], hits[r], groups=groups) for r in RADII_KM}
    return hits, ece, balanced, {r: (float(res["prob"][r].mean() * 100), float(hits[r].mean() * 100)) for r in RADII_KM}


def calibration_table(results: dict, groups: np.ndarray) -> list[str]:
    """Markdown rows: per variant, the mean stated chance, the observed frequency and the ECE at every radius."""
    lines = ["| variant | within | " + " | ".join(f"{r} km" for r in RADII_KM) + " |", "|---|---|" + "---|" * len(RADII_KM)]
    for name, r in results.items():
        _, ece, balanced, means = calibration_figures(r["res"], r["truth"], r["post"].centroids, groups)
        lines += [f"| {name} | mean stated chance % | " + " | ".join(f"{means[d][0]:.1f}" for d in RADII_KM) + " |",
                  f"| {name} | observed % | " + " | ".join(f"{means[d][1]:.1f}" for d in RADII_KM) + " |",
                  f"| {name} | ECE, photos (points) | " + " | ".join(f"{ece[d]:.1f}" for d in RADII_KM) + " |",
                  f"| {name} | ECE, photographers balanced (points) | " + " | ".join(f"{balanced[d]:.1f}" for d in RADII_KM) + " |"]
    return lines


def report(args, cfg, results, rows, ablation_rows, groups, folds, splits, epochs, hierarchy) -> None:
    fus = results[FUSION]
    hits, ece, _, _ = calibration_figures(fus["res"], fus["truth"], fus["post"].centroids, groups)
    # the figure docs/results.md shows is rewritten only with the table that goes with it (--docs)
    OUT.mkdir(parents=True, exist_ok=True)
    plot_reliability(fus["res"]["prob"], hits, (ROOT / "docs" if args.docs else OUT) / "results-reliability.png")
    lp = fus["res"]["logpost_true"]
    ok = np.isfinite(lp)
    bits = (lp[ok] - fus["post"].log_prior.numpy()[fus["true_fin"][ok]]) / np.log(2)
    b_mean, b_lo, b_hi = bootstrap_mean(bits, groups[ok])
    test = splits == "test"
    lines = [
        f"Generated by `python benchmarks/crossval.py --config {args.config}{' --ablations' if args.ablations else ''}"
        f"{' --fit-prior-weight' if args.fit_prior_weight else ''}"
        f"{f' --calibration {args.calibration}' if args.calibration != 'logistic' else ''}` "
        f"on {time.strftime('%Y-%m-%d')}: {len(groups)} dev photos, {len(np.unique(groups))} photographers, "
        f"{args.folds} photographer-grouped folds ({np.bincount(folds).tolist()} photos), {epochs} epochs per fold, "
        f"hierarchy {hierarchy.num_cells} cells from MP-16. Accuracy in % within each distance, "
        "[95 % interval, bootstrap over photographers]; balanced = each photographer weighs the same.",
        "", table(rows), "",
        f"**Bits per photo** (fusion, cross-fitted posterior vs the MP-16 prior alone, on the true finest cell, "
        f"{int(ok.sum())} photos inside a finest cell): {b_mean:+.3f} [{b_lo:+.3f}, {b_hi:+.3f}].", "",
        f"**Calibration** (CV-chosen decision; stated chance vs observed; {args.calibration} maps fitted leaving the photo's "
        "photographer out, on the cross-fitted posterior's masses; ECE over 10 equal-width bins):", "",
        *calibration_table(results, groups), "",
        "Per fold (fitted on the other folds): " + "; ".join(
            f"fold {k}: {f['decision']}, correction {f['beta']:.0f}, prior weight {f['alpha']}, level weights {f['weights']}"
            for k, f in enumerate(fus["res"]["fits"])),
        "", "Training under CV: " + ", ".join(f"{n} {r['run'].seconds:.0f} s" for n, r in results.items()) + f" for {args.folds} folds.",
    ]
    if ablation_rows:
        lines += ["", "Ablations (both variants, same folds, posterior fitted the same way, CV-chosen decision):", "", table(ablation_rows)]
    test_rows = [answer_row("fusion, CV-chosen decision, test.csv photos only", fus["post"].centroids[fus["res"]["answer"]["default"][test]], fus["truth"][test], groups[test])] if test.any() else []
    if test_rows:
        lines += ["", "The same out-of-fold answers restricted to the `test.csv` photos (for comparison with older figures):", "", table(test_rows)]
    text = "\n".join(lines)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.md").write_text(text + "\n")
    (OUT / "report.json").write_text(json.dumps({"rows": rows, "ablations": ablation_rows, "ece": ece, "bits": [b_mean, b_lo, b_hi]}, indent=1))
    print(text)
    if args.docs:
        path = ROOT / "docs" / "results.md"
        doc = path.read_text()
        a, b = doc.index("<!-- cv:begin -->"), doc.index("<!-- cv:end -->")
        atomic_write(path, doc[: a + len("<!-- cv:begin -->")] + "\n" + text + "\n" + doc[b:])


if __name__ == "__main__":
    main()
