"""Partition-hierarchy benchmark on MP-16-like data (issue: geography core).

Draws ``imgs_per_cell`` points inside every cell of GeoEstimation's published MP-16 partition
(``../shared/data/mp16/cells_50_1000.csv``, ~4.6 M points), builds the paper's 7-level hierarchy and
reports time and peak memory; then, in the same run, times the straightforward per-point
``s2sphere`` implementation against ours on a 200 k subset and checks both give identical partitions.

    python benchmarks/partition.py [--shared ../shared] [--subset 200000]
"""
from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np

from geosurge.geo import PAPER_TAU_MAXES, PAPER_TAU_MIN, build_hierarchy, load_partition_csv, s2
from geosurge.geo.reference import partition_as_dict, reference_hierarchy

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--subset", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    table = load_partition_csv(args.shared / "data/mp16/cells_50_1000.csv", on_bad_token="skip")
    pts = s2.sample_in_cells(table.ids, table.counts, np.random.default_rng(0))
    lat, lon = pts[:, 0].copy(), pts[:, 1].copy()
    del pts
    print(f"MP-16-like points: {lat.size:,} drawn in {table.ids.size:,} published cells "
          f"({len(table.skipped)} rows with mangled tokens skipped)")

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        h = build_hierarchy(lat, lon, PAPER_TAU_MIN, PAPER_TAU_MAXES)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    build_hierarchy(lat, lon, PAPER_TAU_MIN, PAPER_TAU_MAXES)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(h.summary())
    print(f"full 7-level build: best {min(times):.2f} s, median {np.median(times):.2f} s over {args.repeats} runs "
          f"(target <= 30 s)")
    print(f"peak memory: {peak / 2**30:.2f} GiB allocated by the build (tracemalloc), "
          f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (target < 4 GB)")

    rng = np.random.default_rng(1)
    sub = rng.choice(lat.size, size=min(args.subset, lat.size), replace=False)
    slat, slon = lat[sub], lon[sub]
    t0 = time.perf_counter()
    ours = build_hierarchy(slat, slon, PAPER_TAU_MIN, PAPER_TAU_MAXES)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = reference_hierarchy(slat, slon, PAPER_TAU_MIN, ours.tau_maxes)
    t_ref = time.perf_counter() - t0
    same = all(partition_as_dict(p.ids, p.counts) == r for p, r in zip(ours.levels, ref))
    print(f"{slat.size:,}-point subset, 7 levels: per-point s2sphere {t_ref:.2f} s, vectorized {t_ours:.3f} s, "
          f"speed-up {t_ref / t_ours:.0f}x (target >= 20x); identical partitions: {same}")
    if not same:
        raise SystemExit("partitions differ")


if __name__ == "__main__":
    main()
