"""The demo's map before and after issue #23's light map: `python benchmarks/map.py [--photos 20] [--repeats 5]`.

Both versions draw the same answers (the embedded checkpoint on the shipped example photos, both variants,
the EXIF truth), interleaved in one run, on one thread (torch and BLAS set to 1; the map itself is pure
Python). "before" is ``geosurge/app/geomap.py`` as of commit BEFORE (Leaflet inlined into every answer,
a Folium element per point, a ring per credible-region cell built one by one), loaded from git; "after"
is the package's. Prints the build time per answer (p50, p90; the first, cold call apart: it builds the
caches) and the HTML each answer sends, and what the new map fetches once per browser instead (cached).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from geosurge.app import geomap  # noqa: E402
from geosurge.data.exif import exif_gps  # noqa: E402
from geosurge.app.settings import EXAMPLES  # noqa: E402
from geosurge.model.variants import pick_variants  # noqa: E402
from geosurge.predictor import Predictor  # noqa: E402

#: main just before the light map
BEFORE = "78df8b1"


def load_before():
    """``geosurge/app/geomap.py`` at BEFORE as a module of this package (its relative imports still resolve)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:geosurge/app/geomap.py"],
                         capture_output=True, text=True)
    if src.returncode != 0:
        sys.exit(f"benchmarks/map.py needs the git history (commit {BEFORE}): {src.stderr.strip()}")
    spec = importlib.util.spec_from_loader("geosurge.app._geomap_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__, module.__file__ = "geosurge.app", geomap.__file__  # its Leaflet: the same files
    exec(compile(src.stdout, f"geomap.py@{BEFORE}", "exec"), module.__dict__)
    return module


def answers(n: int) -> list[tuple]:
    """(primary, hierarchy, primary name, other, other name, truth) per photo, as the demo's handler draws them."""
    predictor = Predictor.from_pretrained()
    out = []
    for path in sorted(EXAMPLES.glob("*.jpg"))[:n]:
        preds = {k: v[0] for k, v in predictor.predict_variants(str(path), level_top=5).items()}
        primary, other = pick_variants(preds, True)
        out.append((preds[primary], predictor.variants[primary].hierarchy, primary, preds.get(other), other, exif_gps(path)))
    return out


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    before = load_before()
    builds = {"before": before.prediction_map, "after": geomap.prediction_map}
    todo = answers(args.photos)
    print(f"{len(todo)} answers x {args.repeats} repeats, interleaved; 1 thread (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
          f"torch {torch.get_num_threads()})")
    cold, ms, kb = {}, {k: [] for k in builds}, {k: [] for k in builds}
    for name, build in builds.items():
        t = time.perf_counter()
        build(*todo[0])
        cold[name] = 1000 * (time.perf_counter() - t)
    for rep in range(args.repeats):
        for i, a in enumerate(todo):
            order = list(builds) if (rep + i) % 2 == 0 else list(builds)[::-1]
            for name in order:
                t = time.perf_counter()
                page = builds[name](*a)
                ms[name].append(1000 * (time.perf_counter() - t))
                if rep == 0:
                    kb[name].append(len(page.encode()) / 1000)
    print(f"{'':8} {'build p50 ms':>13} {'p90 ms':>8} {'first call ms':>14} {'answer kB p50':>14} {'max kB':>8}")
    for name in builds:
        print(f"{name:8} {statistics.median(ms[name]):13.1f} {pct(ms[name], 90):8.1f} {cold[name]:14.0f} "
              f"{statistics.median(kb[name]):14.0f} {max(kb[name]):8.0f}")
    print(f"ratio    {statistics.median(ms['before']) / statistics.median(ms['after']):12.1f}x "
          f"{'':24} {statistics.median(kb['before']) / statistics.median(kb['after']):13.1f}x")
    page = geomap.prediction_map(*todo[0])
    static = [geomap.ASSETS / u.split("/", 2)[2] for u in re.findall(r'(?:src|href)=&quot;([^&]+)&quot;', page)]
    static += [geomap.BASEMAP, geomap.LEAFLET / "images" / "layers.png"]
    print(f"fetched once per browser by 'after' (cached, immutable): {sum(p.stat().st_size for p in static) / 1000:.0f} kB "
          f"in {len(static)} files (the basemap {geomap.BASEMAP.stat().st_size / 1000:.0f} kB); 'before' sends Leaflet in every answer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
