"""DeepLab as shipped vs its in-memory rewrites: `python benchmarks/segmenter.py [--photos 20] [--size N]`.

Three interpreters run the same photos, interleaved (these machines change speed from minute to
minute), with the threads the app uses:

- as shipped: the file's graph at its 513 x 513 input;
- fused: the atrous convolutions rewritten as dilated ones (same logits; see ``_tflite.py``);
- fused at N: the same graph for an N x N input (default: the demo checkpoint's ``segmenter.input_size``).

Prints the p50 time of each (resize, invoke and argmax: what a caller waits for), the ratios, and how
the labels compare: fused vs shipped must agree everywhere; N vs 513 is compared with how much the
513 model disagrees with itself on the mirrored photo, the noise a change of input already brings.
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

from geosurge.model.config import SegmenterConfig  # noqa: E402
from geosurge.model.checkpoint import EMBEDDED_CHECKPOINT, bundled_segmenter  # noqa: E402
from geosurge.model.checkpoint_dir import CheckpointDir  # noqa: E402
from geosurge.model.variants import FUSION  # noqa: E402
from geosurge.model.segmenters.deeplab import ENV_VAR, DeepLabADE20K, default_path  # noqa: E402


def demo_size() -> int | None:
    return CheckpointDir.read(EMBEDDED_CHECKPOINT).variant(FUSION).model_config().segmenter.input_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--size", type=int, default=None, help="input side to compare (default: the demo checkpoint's)")
    ap.add_argument("--test-csv", default=str(ROOT.parent / "shared/data/im2gps3k-dev/test.csv"))
    args = ap.parse_args()
    # the file the demo runs: $GEOSURGE_DEEPLAB, else the one shipped in the embedded checkpoint
    path = default_path() if os.environ.get(ENV_VAR) else bundled_segmenter(EMBEDDED_CHECKPOINT) or default_path()
    if path is None:
        print("the DeepLab model file was not found (set $GEOSURGE_DEEPLAB)")
        return 2
    size = args.size or demo_size() or 385
    segs = {
        "as shipped": DeepLabADE20K(SegmenterConfig(path=str(path)), fuse=False),
        "fused": DeepLabADE20K(SegmenterConfig(path=str(path))),
        f"fused at {size}": DeepLabADE20K(SegmenterConfig(path=str(path), input_size=size)),
    }
    test = Path(args.test_csv)
    rows = list(csv.DictReader(test.open()))[: args.photos]
    images = [Image.open(test.parent / "images" / r["image"]).convert("RGB") for r in rows]
    for s in segs.values():
        s(images[0])  # first runs allocate
    times = {k: [] for k in segs}
    exact, agree, mirror = [], [], []
    for img in images:
        labels = {}
        for name, seg in segs.items():
            t = time.perf_counter()
            labels[name] = seg(img)
            times[name].append(time.perf_counter() - t)
        exact.append(float((labels["as shipped"] == labels["fused"]).mean()))
        agree.append(float((labels[f"fused at {size}"] == labels["fused"]).mean()))
        flipped = segs["fused"](img.transpose(Image.FLIP_LEFT_RIGHT))[:, ::-1]
        mirror.append(float((flipped == labels["fused"]).mean()))
    p50 = {k: statistics.median(v) * 1000 for k, v in times.items()}
    base = p50["as shipped"]
    print(f"{len(images)} photos, {segs['fused'].num_threads} threads, {segs['fused'].fused_convolutions} atrous convolutions fused")
    for k, v in p50.items():
        print(f"  {k:>14}: p50 {v:4.0f} ms  ({v / base:.2f} x as shipped)")
    print(f"labels: fused = as shipped on {100 * min(exact):.4f} % of pixels (worst photo); "
          f"{size} vs 513 agree on {100 * np.mean(agree):.1f} % (mean), "
          f"while 513 on the mirrored photo agrees with itself on {100 * np.mean(mirror):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
