"""DeepLab as shipped vs its in-memory rewrites: `python benchmarks/segmenter.py [--photos 20] [--size N]`;
batched vs one at a time: `python benchmarks/segmenter.py --batch 8 [--oneformer] [--photos 16]`.

Three interpreters run the same photos, interleaved (these machines change speed from minute to
minute), with the threads the app uses:

- as shipped: the file's graph at its 513 x 513 input;
- fused: the atrous convolutions rewritten as dilated ones (same logits; see ``_tflite.py``);
- fused at N: the same graph for an N x N input (default: the demo checkpoint's ``segmenter.input_size``).

Prints the p50 time of each (resize, invoke and argmax: what a caller waits for), the ratios, and how
the labels compare: fused vs shipped must agree everywhere; N vs 513 is compared with how much the
513 model disagrees with itself on the mirrored photo, the noise a change of input already brings.

``--batch N`` instead times ``segment_batch`` on N photos per forward against one photo per call, on the
same real photos, interleaved round by round, for DeepLab at the demo's size and, with ``--oneformer``,
the paper's OneFormer Swin-L (random weights: the architecture is what costs; processor shorter side
``--oneformer-side``, 512 in the paper). Photos that the OneFormer processor brings to different sizes go
in separate forwards (no padding, so the maps stay exact); the mean group size is printed. Label maps
must be identical; the ratio printed is the CPU's (``benchmarks/gpu_check.py`` times the GPU).
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
from geosurge.model.checkpoint import bundled_segmenter  # noqa: E402
from geosurge.model.embedded import EMBEDDED_CHECKPOINT  # noqa: E402
from geosurge.model.checkpoint_dir import CheckpointDir  # noqa: E402
from geosurge.model.variants import FUSION  # noqa: E402
from geosurge.model.segmenters.deeplab import ENV_VAR, DeepLabADE20K, default_path  # noqa: E402


def demo_size() -> int | None:
    return CheckpointDir.read(EMBEDDED_CHECKPOINT).variant(FUSION).model_config().segmenter.input_size


def batch_ratio(name: str, seg, images: list, batch: int, rounds: int) -> None:
    """Print photos/s one at a time vs ``batch`` per forward (interleaved), and whether the maps agree."""
    one, many, same = [], [], True
    for r in range(rounds):
        for mode in (("one", "many") if r % 2 == 0 else ("many", "one")):
            t = time.perf_counter()
            if mode == "one":
                got_one = [seg(im) for im in images]
                one.append(len(images) / (time.perf_counter() - t))
            else:
                got_many = [lab for s in range(0, len(images), batch) for lab in seg.segment_batch(images[s : s + batch])]
                many.append(len(images) / (time.perf_counter() - t))
        same &= all(np.array_equal(a, b) for a, b in zip(got_one, got_many))
    a, b = statistics.median(one), statistics.median(many)
    print(f"  {name}: one at a time {a:.2f} photos/s, {batch} per forward {b:.2f} photos/s ({b / a:.2f} x); "
          f"label maps identical: {same}", flush=True)


def main_batch(args, path) -> int:
    import torch

    test = Path(args.test_csv)
    rows = list(csv.DictReader(test.open()))[: args.photos]
    images = [Image.open(test.parent / "images" / r["image"]).convert("RGB") for r in rows]
    print(f"{len(images)} photos, {args.rounds} rounds, torch threads {torch.get_num_threads()}, loadavg {_loadavg()}", flush=True)
    deeplab = DeepLabADE20K(SegmenterConfig(path=str(path), input_size=demo_size() or 385))
    deeplab.segment_batch(images[:2])
    batch_ratio(f"DeepLab at {deeplab.input_size} ({deeplab.num_threads} threads)", deeplab, images, args.batch, args.rounds)
    if args.oneformer:
        import tempfile

        sys.path.insert(0, str(ROOT / "benchmarks"))
        import paper_models
        from geosurge.model.segmenters.oneformer import OneFormerADE20K

        with tempfile.TemporaryDirectory() as tmp:
            paper_models.save_oneformer(Path(tmp), args.oneformer_side)
            one = OneFormerADE20K(SegmenterConfig("oneformer", tmp))
            sizes = [tuple(one.processor(images=[im], task_inputs=["semantic"], return_tensors="pt")["pixel_values"].shape[-2:]) for im in images]
            groups = [len(set(sizes[s : s + args.batch])) for s in range(0, len(sizes), args.batch)]
            print(f"  OneFormer processor sizes: {len(set(sizes))} distinct over {len(images)} photos; "
                  f"{len(images) / sum(groups):.1f} photos per forward on average in batches of {args.batch}", flush=True)
            batch_ratio(f"OneFormer Swin-L (random weights, shorter side {args.oneformer_side})", one, images, args.batch, args.rounds)
    print(f"loadavg after {_loadavg()}")
    return 0


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--size", type=int, default=None, help="input side to compare (default: the demo checkpoint's)")
    ap.add_argument("--test-csv", default=str(ROOT.parent / "shared/data/im2gps3k-dev/test.csv"))
    ap.add_argument("--batch", type=int, default=None, help="compare N photos per forward with one at a time instead")
    ap.add_argument("--oneformer", action="store_true", help="with --batch: also the paper's OneFormer Swin-L (random weights)")
    ap.add_argument("--oneformer-side", type=int, default=512, help="OneFormer processor's shorter side (paper 512)")
    ap.add_argument("--rounds", type=int, default=2, help="with --batch: interleaved rounds")
    args = ap.parse_args()
    # the file the demo runs: $GEOSURGE_DEEPLAB, else the one shipped in the embedded checkpoint
    path = default_path() if os.environ.get(ENV_VAR) else bundled_segmenter(EMBEDDED_CHECKPOINT) or default_path()
    if path is None:
        print("the DeepLab model file was not found (set $GEOSURGE_DEEPLAB)")
        return 2
    if args.batch:
        return main_batch(args, path)
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
