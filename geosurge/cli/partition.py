"""``geosurge partition``: build and save the S2 partition hierarchy."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..geo.hierarchy import PAPER_TAU_MAXES, PAPER_TAU_MIN, build_hierarchy
from ..geo.coords_io import read_coordinates_csv
from ..geo.partition_csv import write_partition_csv


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coords", required=True, type=Path, help="CSV with a header naming lat/lon columns (e.g. lat,lon or LAT,LON)")
    p.add_argument("--tau-min", type=int, default=PAPER_TAU_MIN, help="drop cells with fewer samples (default %(default)s)")
    p.add_argument(
        "--tau-max", type=int, nargs="+", default=list(PAPER_TAU_MAXES),
        help="one partition per value: split cells with more samples (default: the paper's %(default)s)",
    )
    p.add_argument("--out", required=True, type=Path, help="directory for hierarchy.json/.npz and one CSV per level")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    lats, lons = read_coordinates_csv(args.coords)
    t1 = time.perf_counter()
    h = build_hierarchy(lats, lons, args.tau_min, args.tau_max)
    t2 = time.perf_counter()
    h.save(args.out)
    for k, level in enumerate(h.levels):
        write_partition_csv(level, args.out / f"cells_level{k}_tau{level.tau_max}.csv")
    print(f"{len(lats):,} samples read in {t1 - t0:.1f} s; hierarchy built in {t2 - t1:.1f} s (tau_min={h.tau_min})")
    print(h.summary())
    print(f"written to {args.out}/")
    return 0
