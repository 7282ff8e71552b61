"""``geosurge shards``: pack an image CSV (and its label maps) into webdataset tar shards."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", required=True, type=Path, help="image,lat,lon CSV")
    p.add_argument("--images", type=Path, default=None, help="image root (default: the CSV's folder)")
    p.add_argument("--labels", type=Path, default=None, help="label-map directory to pack beside the images")
    p.add_argument("--out", required=True, type=Path, help="output directory for NNNNNN.tar + index.csv")
    p.add_argument("--max-count", type=int, default=5000, help="samples per shard")


def run(args: argparse.Namespace) -> int:
    from ..data.labels import LabelStore
    from ..data.records import read_records
    from ..data.shards import write_shards

    records, skipped = read_records(args.csv, args.images)
    if skipped.total:
        print(skipped.summary())
    paths, report = write_shards(records, args.out, LabelStore(args.labels) if args.labels else None, args.max_count)
    print(f"wrote {len(paths)} shard(s) to {args.out}; {report.summary('images')}")
    return 0
