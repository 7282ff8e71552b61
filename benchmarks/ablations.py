"""Ablations of the paper (Tables VI-VIII) and classic baselines, side by side on im2gps3k-dev test.csv.

    python benchmarks/ablations.py            # after `geosurge train --config configs/demo.yaml`

Trains the ablation variants of configs/demo.yaml (same data, seed, schedule and backbone; one thing
changed each), evaluates everything with ten crops on the 447 test photos (photographers unseen in
training) and rewrites the generated part of docs/results.md. Feature caches make a re-run fast.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geosurge.data.records import read_records  # noqa: E402
from geosurge.eval.baselines import backbone_view_features, geographic_median, knn_predict  # noqa: E402
from geosurge.eval.evaluate import EvalResult, evaluate_checkpoint, markdown_table, plot_accuracy  # noqa: E402
from geosurge.geo.metrics import accuracy_report  # noqa: E402
from geosurge.model.checkpoint import load_checkpoint  # noqa: E402
from geosurge.model.views import load_or_build_views  # noqa: E402
from geosurge.train.config import load_train_config  # noqa: E402
from geosurge.train.trainer import train  # noqa: E402

BEGIN, END = "<!-- generated:begin -->", "<!-- generated:end -->"


def ablation_configs(base):
    """name -> (config, description). Each changes one thing of the full model."""
    out = {}
    levels = base.model.geo.tau_maxes

    def variant(name, desc, **geo):
        c = copy.deepcopy(base)
        c.run.variants = None
        c.model.fusion.enabled = True
        for k, v in geo.items():
            setattr(c.model.geo, k, v)
        c.run.output = str(ROOT / "runs/ablations" / name)
        c.run.work_dir = str(ROOT / "runs/ablations" / f"{name}.work")
        out[name] = (c, desc)

    variant("no-geo-embeddings", "linear classifier over the finest cells, cross-entropy (Table VI)", head="linear", tau_maxes=levels[-1:])
    for depth in (1, 3, 5):
        variant(f"depth-{depth}", f"first {depth} hierarchy level(s) (Table VII)", tau_maxes=levels[:depth])
    return out


def result(name, pred, true):
    return EvalResult(name, accuracy_report(pred[:, 0], pred[:, 1], true[:, 0], true[:, 1]).as_dict(), pred, true)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/demo.yaml"))
    ap.add_argument("--checkpoint", default=None, help="the trained pair (default: the config's run.output)")
    ap.add_argument("--test-csv", default=str(ROOT.parent / "shared/data/im2gps3k-dev/test.csv"))
    ap.add_argument("--out", default=str(ROOT / "docs/results.md"))
    ap.add_argument("--retrain", action="store_true", help="retrain ablations even when their checkpoint exists")
    args = ap.parse_args()
    torch.manual_seed(0)

    base = load_train_config(args.config)
    pair = Path(args.checkpoint or base.run.output)
    test, skipped = read_records(args.test_csv)
    train_rec, _ = read_records(base.data.train_csv, base.data.images)
    cache, labels = base.data.cache_dir, base.data.labels
    timings = {}

    results: list[EvalResult] = []
    full = evaluate_checkpoint(pair, test, ten_crop=True, fusion=True, labels=labels, cache_dir=cache, name="GeoSURGE (full: fusion, 7 levels)")
    results.append(full)
    # not in the paper: the log cell frequency added once to each cell's score, and the expected-distance decision
    results.append(evaluate_checkpoint(pair, test, ten_crop=True, fusion=True, labels=labels, cache_dir=cache,
                                       name="GeoSURGE + cell-frequency prior (prior_weight 1)",
                                       model_overrides={"geo": {"prior_weight": 1.0}}))
    results.append(evaluate_checkpoint(pair, test, ten_crop=True, fusion=True, labels=labels, cache_dir=cache,
                                       name="GeoSURGE, expected-distance decision (decision median)",
                                       model_overrides={"geo": {"decision": "median"}}))
    results.append(evaluate_checkpoint(pair, test, ten_crop=True, fusion=False, labels=labels, cache_dir=cache,
                                       name="fusion off (RGB only, Table VIII)"))

    for name, (cfg, desc) in ablation_configs(base).items():
        out = Path(cfg.run.output)
        if args.retrain or not (out / "config.json").is_file():
            t0 = time.time()
            train(cfg)
            timings[name] = time.time() - t0
        results.append(evaluate_checkpoint(out, test, ten_crop=True, fusion=True, labels=labels, cache_dir=cache, name=f"{name}: {desc}"))

    # baselines on the same backbone features (pretrained, untouched by our training)
    bb_model, _, _, _ = load_checkpoint(pair / "rgb")
    from geosurge.model.geosurge import GeoSURGE

    pretrained = GeoSURGE(bb_model.cfg, [1]).eval()  # fresh pretrained backbone: the features the kNN baseline uses
    ref_views = load_or_build_views(pretrained, train_rec, None, cache, views=base.data.views)
    q_views = load_or_build_views(pretrained, test, None, cache, views="ten")
    refs, query = backbone_view_features(pretrained, ref_views), backbone_view_features(pretrained, q_views)
    ref_ll = np.stack([train_rec.lats[ref_views.keep], train_rec.lons[ref_views.keep]], 1)
    true = np.stack([test.lats[q_views.keep], test.lons[q_views.keep]], 1)
    results.append(result("1-NN retrieval, backbone features (IM2GPS)", knn_predict(query, refs, ref_ll, 1), true))
    results.append(result("10-NN retrieval with density vote", knn_predict(query, refs, ref_ll, 10), true))
    med = geographic_median(train_rec.lats, train_rec.lons)
    results.append(result(f"geographic median of the train photos ({med[0]:.2f}, {med[1]:.2f})", np.tile(med, (len(test), 1)), np.stack([test.lats, test.lons], 1)))

    table = markdown_table(results)
    lvl = ["| model | " + " | ".join(f"L{k} ({n})" for k, n in enumerate(full.metrics["level_cells"])) + " |",
           "|---|" + "---|" * len(full.metrics["level_cells"])]
    for r in results:
        if "level_acc" in r.metrics:
            accs = r.metrics["level_acc"]
            lvl.append(f"| {r.name} | " + " | ".join(f"{a:.1f}" for a in accs) + " |" + " |" * (len(full.metrics["level_cells"]) - len(accs)))
    plot = Path(args.out).with_name("results-accuracy.png")
    plot_accuracy(results, plot, "im2gps3k-dev test.csv (447 photos), ten crops")
    info = json.loads((pair / "fusion/config.json").read_text())["training"]
    gen = "\n".join([
        BEGIN,
        f"Generated by `python benchmarks/ablations.py` on {time.strftime('%Y-%m-%d')}; {len(test)} test photos"
        f" ({skipped.total} rows skipped), ten crops. Accuracy in % within each distance.",
        "", table, "Per-level cell accuracy (% of test photos whose top cell at that level contains them; cells per level in brackets):",
        "", "\n".join(lvl), "",
        f"Training of the full model: best epoch {info['best_epoch']}, {info['steps']} steps, {info['seconds']:.0f} s"
        f" (this variant alone; `geosurge train --config configs/demo.yaml` trains both variants and segments the photos).",
        *(f"Ablation `{k}` trained in {v:.0f} s." for k, v in timings.items()),
        END,
    ])
    path = Path(args.out)
    text = path.read_text() if path.is_file() else f"# Results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    path.write_text(head + gen + rest.split(END, 1)[1])
    print(table)
    print(f"wrote {path} and {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
