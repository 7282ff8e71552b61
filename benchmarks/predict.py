"""Batch geotagging (`geosurge predict DIR`) on real photos: batch size and overlap, side by side.
`python benchmarks/predict.py [--photos 48] [--rounds 3]`

Runs the CLI's own loop (``geosurge.cli.predict.locate_batches``: decode, DeepLab, backbone, fusion,
posterior) over the same photos under each setting, interleaved round by round (these machines change
speed from minute to minute), in one process with the thread policy's settings and the backbone runtime
the Predictor chose. Prints the median photos/s of each setting and its ratio to the CLI's default:

- one photo at a time (the loop before batching);
- batches of 16, each decoded, then segmented in the Predictor's helper thread beside the frozen backbone
  pass (the CLI's default);
- batches of 16 decoded and segmented first, then the model (the CLI before segmenting beside the backbone);
- batches of 4 / 16 with the next batch also decoded in a helper thread while the model runs.

Also prints the CPU time per photo (all threads of the process): unlike photos/s, other jobs on the
machine change it far less, and its inverse is the rate one uncontended core would give.
Also checks that every setting gives the same answers.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: name -> (batch size, overlap); "segmented first" is the loop before segmentation ran beside the backbone
SETTINGS = {"1 at a time": (1, False), "16 (CLI)": (16, False), "16, segmented first": (16, False),
            "4, overlap": (4, True), "16, overlap": (16, True)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--test-csv", default=str(ROOT.parent / "shared/data/im2gps3k-dev/test.csv"))
    args = ap.parse_args()
    import torch

    from geosurge import Predictor
    from geosurge.cli import build_parser
    from geosurge.cli.predict import locate_batches

    test = Path(args.test_csv)
    paths = [test.parent / "images" / r["image"] for r in list(csv.DictReader(test.open()))[: args.photos]]
    predictor = Predictor.from_pretrained()
    print(f"{len(paths)} photos from {test}; torch threads {torch.get_num_threads()}, backbone in {predictor.backbone_runtime}, "
          f"DeepLab threads {getattr(predictor.segmenter, 'num_threads', '-')}; loadavg {_loadavg()}")
    cli = {name: build_parser().parse_args(["predict", "x", "--batch-size", str(b)]) for name, (b, _) in SETTINGS.items()}
    list(locate_batches(predictor, paths[:4], cli["4, overlap"]))  # warm-up
    rates: dict[str, list[float]] = {k: [] for k in SETTINGS}
    cpu: dict[str, list[float]] = {k: [] for k in SETTINGS}  # CPU seconds per photo, all threads: what load does not change
    answers: dict[str, list] = {}
    names = list(SETTINGS)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t, c = time.perf_counter(), time.process_time()
            if name == "16, segmented first":
                got = [(p.lat, p.lon) for p in segmented_first(predictor, paths, 16)]
            else:
                got = [(p.lat, p.lon) for _, p in locate_batches(predictor, paths, cli[name], overlap=SETTINGS[name][1])]
            rates[name].append(len(paths) / (time.perf_counter() - t))
            cpu[name].append((time.process_time() - c) / len(paths))
            answers[name] = got
    ref = rates["16 (CLI)"]
    base = statistics.median(ref)
    for name, v in rates.items():
        c = statistics.median(cpu[name])
        print(f"  {name:>12}: {statistics.median(v):5.2f} photos/s  ({statistics.median(v) / base:.2f} x the CLI's default); "
              f"{c * 1000:.0f} CPU-ms per photo (1 / that = {1 / c:.1f} photos/s on one core of our own)")
    same = all(a == answers[names[0]] for a in answers.values())
    print(f"answers identical across settings: {same}; loadavg after {_loadavg()}; {os.cpu_count()} CPUs")
    return 0 if same else 1


def segmented_first(predictor, paths: list[Path], batch: int):
    """Decode and segment a batch, then run the model on it: nothing beside the backbone pass."""
    from geosurge.data.images import load_image

    for s in range(0, len(paths), batch):
        images = [load_image(p) for p in paths[s : s + batch]]
        maps = [predictor.segment(im) for im in images]
        yield from predictor.predict(images, batch_size=batch, label_maps=maps)


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


if __name__ == "__main__":
    sys.exit(main())
