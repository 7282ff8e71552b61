"""``geosurge segment``: precompute ADE20K label maps (PNG) so training never runs the segmenter."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", required=True, type=Path, nargs="+", help="image,lat,lon CSV file(s)")
    p.add_argument("--images", type=Path, default=None, help="image root (default: each CSV's folder)")
    p.add_argument("--out", required=True, type=Path, help="label-map directory (mirrors the image ids)")
    p.add_argument("--segmenter", default="deeplab-ade20k", help="segmenter name (deeplab-ade20k, oneformer)")
    p.add_argument("--segmenter-path", default=None, help="model file / directory / hub id (default: the segmenter's)")
    p.add_argument("--input-size", type=int, default=None,
                   help="side of the square DeepLab runs at (default: the model's 513); must match the model config's segmenter.input_size")


def run(args: argparse.Namespace) -> int:
    from ..data.labels import LabelStore, segment_records
    from ..data.records import read_records
    from ..model.config import SegmenterConfig
    from ..model.segmenters import create_segmenter

    cfg = SegmenterConfig(args.segmenter, args.segmenter_path, args.input_size)
    seg = create_segmenter(cfg)
    store = LabelStore(args.out, cfg)
    failed = 0
    for csv_path in args.csv:
        records, skipped = read_records(csv_path, args.images)
        if skipped.total:
            print(f"{csv_path}: {skipped.summary()}")
        report = segment_records(records, seg, store)
        print(f"{csv_path}: {report.summary()}")
        failed += report.failed.total
    return 1 if failed else 0
