"""Photos per second of the embedded checkpoint under each thread setting, side by side, idle and loaded:
`python benchmarks/inference.py [--photos 12] [--rounds 4] [--load 2] [--load-seconds 300]`

One worker process per setting loads the Predictor once (thread settings such as ``OMP_WAIT_POLICY`` act
only when the process starts), then the workers take turns, round after round, geolocating the same real
photos one at a time from their files (decode, DeepLab, backbone, fusion, posterior: what
``geosurge predict`` does per photo). Interleaving matters: these machines change speed from one minute to
the next, so only figures from the same rounds are compared. Then the same rounds again with ``--load``
busy processes running beside them (a bounded CPU load this script starts, and stops after the rounds or
after ``--load-seconds``, whichever comes first). ``/proc/loadavg`` is printed before and after each phase:
on a shared machine "idle" is whatever the other users leave.

Settings: the policy's default (``geosurge.runtime``: one torch thread unless the user chose), torch's
own default of one thread per core, the same with ``OMP_WAIT_POLICY=PASSIVE``, one thread for DeepLab
too, and the default with the frozen backbone in torch instead of onnxruntime. Prints the median photos/s of each and its ratio to the best setting of that phase.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> (environment, DeepLab threads or None for the segmenter's default)
SETTINGS: dict[str, tuple[dict[str, str], int | None]] = {
    "default (policy)": ({}, None),
    "torch 1 per core": ({"GEOSURGE_THREADS": str(os.cpu_count() or 1)}, None),
    "1 per core + PASSIVE": ({"GEOSURGE_THREADS": str(os.cpu_count() or 1), "OMP_WAIT_POLICY": "PASSIVE"}, None),
    "torch 1, DeepLab 1": ({}, 1),
    "backbone in torch": ({"GEOSURGE_BACKBONE_RUNTIME": "torch"}, None),
}


def worker(photos: list[str], seg_threads: int | None) -> None:
    """Load once; on each line from stdin geolocate ``photos`` one by one and print the seconds taken."""
    import warnings

    import torch

    from geosurge import Predictor
    from geosurge.model.embedded import EMBEDDED_CHECKPOINT

    predictor = Predictor.from_pretrained(EMBEDDED_CHECKPOINT)
    if seg_threads is not None and predictor.segmenter is not None:
        from geosurge.model.config import SegmenterConfig
        from geosurge.model.segmenters.deeplab import DeepLabADE20K

        s = predictor.segmenter
        predictor.segmenter = DeepLabADE20K(SegmenterConfig(path=str(s.path), input_size=s.input_size), num_threads=seg_threads)
    warnings.simplefilter("ignore")
    for p in photos[:2]:
        predictor.predict(p)  # warm-up: first calls allocate
    print(f"ready torch_threads={torch.get_num_threads()} backbone={getattr(predictor, 'backbone_runtime', 'torch')}", flush=True)
    for _ in sys.stdin:
        t, c = time.perf_counter(), time.process_time()
        for p in photos:
            predictor.predict(p)
        print(time.perf_counter() - t, time.process_time() - c, flush=True)


def start_workers(photos: list[str]) -> dict[str, subprocess.Popen]:
    procs = {}
    for name, (env, seg) in SETTINGS.items():
        full = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GEOSURGE_THREADS")}
        full.update(env, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, __file__, "--worker", "--seg-threads", str(seg or 0), *photos]
        procs[name] = subprocess.Popen(cmd, env=full, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    for name, p in procs.items():
        line = p.stdout.readline().strip()
        if not line.startswith("ready"):
            raise RuntimeError(f"worker {name!r} failed to start: {line!r}")
        print(f"  {name:>22}: {line[6:]}")
    return procs


def rounds(procs: dict[str, subprocess.Popen], n: int, photos: int) -> dict[str, tuple[float, float]]:
    """Median (photos/s, CPU seconds per photo) per setting over ``n`` interleaved rounds (the order
    rotates each round). CPU time counts every thread of the worker: spinning threads show there."""
    rates: dict[str, list[float]] = {k: [] for k in procs}
    cpu: dict[str, list[float]] = {k: [] for k in procs}
    names = list(procs)
    for r in range(n):
        for name in names[r % len(names):] + names[: r % len(names)]:
            procs[name].stdin.write("go\n")
            procs[name].stdin.flush()
            wall, used = map(float, procs[name].stdout.readline().split())
            rates[name].append(photos / wall)
            cpu[name].append(used / photos)
    return {k: (statistics.median(rates[k]), statistics.median(cpu[k])) for k in names}


def start_load(n: int, seconds: float) -> list[subprocess.Popen]:
    busy = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", busy]) for _ in range(n)]


def report(phase: str, rates: dict[str, tuple[float, float]]) -> None:
    best = max(r for r, _ in rates.values())
    print(f"{phase}:")
    for name, (r, c) in rates.items():
        print(f"  {name:>22}: {r:5.2f} photos/s  ({r / best:.2f} x the best), {c * 1000:4.0f} CPU-ms per photo")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--load", type=int, default=2, help="busy processes in the loaded phase (0: skip it)")
    ap.add_argument("--load-seconds", type=float, default=300, help="the load stops by itself after this long")
    ap.add_argument("--test-csv", default=str(ROOT.parent / "shared/data/im2gps3k-dev/test.csv"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seg-threads", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.paths, args.seg_threads or None)
        return 0
    test = Path(args.test_csv)
    photos = [str(test.parent / "images" / r["image"]) for r in list(csv.DictReader(test.open()))[: args.photos]]
    print(f"{len(photos)} photos from {test}, one at a time; {os.cpu_count()} CPUs; workers:")
    procs = start_workers(photos)
    try:
        before = loadavg()
        idle = rounds(procs, args.rounds, len(photos))
        report(f"no added load (loadavg {before} before, {loadavg()} after)", idle)
        if args.load:
            load = start_load(args.load, args.load_seconds)
            try:
                before = loadavg()
                loaded = rounds(procs, args.rounds, len(photos))
            finally:
                for p in load:
                    p.kill()
            report(f"with {args.load} busy processes (loadavg {before} before, {loadavg()} after)", loaded)
    finally:
        for p in procs.values():
            p.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
