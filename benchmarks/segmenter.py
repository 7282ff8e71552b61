"""DeepLab as shipped vs with its atrous convolutions fused: `python benchmarks/segmenter.py [--photos 20]`.

Both interpreters run the same photos, interleaved (these machines change speed from minute to
minute), with the threads the app uses; prints the p50 invoke time of each, their ratio, and whether
every label agrees.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geosurge.model.segmenters._tflite import fuse_dilated_convolutions  # noqa: E402
from geosurge.model.segmenters.deeplab import DeepLabADE20K, default_path  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--test-csv", default=str(ROOT.parent / "shared/data/im2gps3k-dev/test.csv"))
    args = ap.parse_args()
    from ai_edge_litert.interpreter import Interpreter

    path = default_path()
    if path is None:
        print("the DeepLab model file was not found (set $GEOSURGE_DEEPLAB)")
        return 2
    raw = path.read_bytes()
    fused, n = fuse_dilated_convolutions(raw)
    threads = min(4, os.cpu_count() or 1)
    runs = {}
    for name, content in (("as shipped", raw), ("fused", fused)):
        it = Interpreter(model_content=content, num_threads=threads)
        it.allocate_tensors()
        runs[name] = it
    test = Path(args.test_csv)
    rows = list(csv.DictReader(test.open()))[: args.photos]
    size = DeepLabADE20K.input_size
    times = {k: [] for k in runs}
    agree = []
    for r in rows:
        img = Image.open(test.parent / "images" / r["image"]).convert("RGB")
        x = (np.asarray(img.resize((size, size), Image.BILINEAR), np.float32) / 127.5 - 1.0)[None]
        labels = []
        for name, it in runs.items():
            t = time.perf_counter()
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            times[name].append(time.perf_counter() - t)
            labels.append(it.get_tensor(it.get_output_details()[0]["index"])[0].argmax(-1))
        agree.append(float((labels[0] == labels[1]).mean()))
    p50 = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"{len(rows)} photos, {threads} threads, {n} atrous convolutions fused")
    print(f"invoke p50: as shipped {p50['as shipped']:.0f} ms, fused {p50['fused']:.0f} ms -> "
          f"fused takes {p50['fused'] / p50['as shipped']:.2f} x the time; labels agree on {100 * min(agree):.4f} % of pixels (worst photo)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
