"""``geosurge evaluate``: accuracy of one or more checkpoints on a CSV of geotagged photos."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_views_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, nargs="+", type=Path, help="checkpoint dir(s) or fusion/rgb pair dir(s)")
    p.add_argument("--csv", required=True, type=Path, help="image,lat,lon CSV of the test photos")
    p.add_argument("--images", type=Path, default=None, help="image root (default: images/ beside the CSV, else its folder)")
    p.add_argument("--out", required=True, type=Path, help="directory for report.json, results.md and accuracy.png")
    add_views_argument(p)
    p.add_argument("--no-fusion", action="store_true", help="evaluate the RGB-only variant of pair directories")
    p.add_argument("--labels", type=Path, default=None, help="label-map directory (default: .cache/labels/<segmenter>[-<input size>], as the checkpoint says)")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/geosurge"), help="feature cache")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: GPU when present)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.records import SkipReport, read_records
    from ..eval.evaluate import evaluate_checkpoint, markdown_table, write_outputs

    records, skipped = read_records(args.csv, args.images)
    if skipped.total:
        print(f"{args.csv}: {skipped.summary()}")
    if not len(records):
        raise ValueError(f"{args.csv}: no usable rows")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results, shown = [], set()
    for ck in args.checkpoint:
        failed = SkipReport()  # per checkpoint: the same unreadable photo is one failure, not one per model
        results.append(evaluate_checkpoint(ck, records, args.views, not args.no_fusion, args.labels, args.cache_dir,
                                           device, report=failed))
        if failed.total and (text := failed.summary("images")) not in shown:
            shown.add(text)
            print(text if len(args.checkpoint) == 1 else f"{ck}: {text}")
    paths = write_outputs(results, args.out, meta={"csv": str(args.csv), "rows_skipped": skipped.total})
    print(markdown_table(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
