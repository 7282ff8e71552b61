"""``geosurge predict``: geolocate photos (files or folders, walked recursively) with a checkpoint.

Prints one line per photo, or one JSON object with ``--json``; ``--out results.csv|.geojson`` writes one
row / feature per photo, unreadable files included with their error (also reported on stderr). A progress
bar runs on stderr while writing a file.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from .options import add_views_argument

#: What a folder is searched for (case-insensitive suffixes).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".jfif"}
#: photos per model forward in a batch run (python benchmarks/predict.py measured sizes side by side)
BATCH = 16


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", type=Path, help="image files and/or folders (searched recursively)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint directory, fusion/ + rgb/ pair or Hugging Face Hub repo id (default: the embedded one)")
    p.add_argument("--no-fusion", action="store_true", help="use the RGB-only model")
    add_views_argument(p)
    p.add_argument("--top-k", type=int, default=3, help="the k best finest cells in the output (default 3)")
    p.add_argument("--segmenter-path", default=None, help="segmentation model path (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: GPU when present)")
    p.add_argument("--decision", default=None,
                   help="answer rule: argmax (most probable cell), median (least expected distance) or within:R (most chance "
                        "within R km); default: the checkpoint's")
    p.add_argument("--json", action="store_true", help="print one JSON object per image (errors too)")
    p.add_argument("--out", type=Path, default=None, help="write results.csv or results.geojson (one row / feature per photo)")
    p.add_argument("--batch-size", type=int, default=BATCH,
                   help=f"photos per model forward (default {BATCH})")


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders walked recursively for image files (sorted). A missing path is kept, so it
    is reported like any other unreadable input."""
    out = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def chances_text(r) -> str:
    """"62 % within 2,500 km, 21 % within 750 km, ..." (or the product score without a fitted posterior)."""
    if not r.within_km:
        return f"product score {r.score:.3g} (no calibrated chances in this checkpoint)"
    return ", ".join(f"{100 * p:.0f} % within {k:,} km" for k, p in sorted(r.within_km.items(), reverse=True))


def run(args: argparse.Namespace) -> int:
    from ..data.images import ImageLoadError
    from ..geo.geocode import place_names
    from ..model.embedded import EMBEDDED_CHECKPOINT
    from ..predictor import Predictor
    from .results import open_writer, result_record

    if args.out is not None and args.out.suffix.lower() not in (".csv", ".geojson", ".json"):
        return _fail(args, f"--out must end in .csv or .geojson, not {args.out.name!r}")
    paths = expand_inputs(args.images)
    if not paths:
        return _fail(args, "no image files found in " + ", ".join(map(str, args.images)))
    predictor = Predictor.from_pretrained(args.checkpoint or EMBEDDED_CHECKPOINT, device=args.device,
                                          segmenter_path=args.segmenter_path)
    if not args.no_fusion and (reason := predictor.fusion_unavailable_reason()):
        _note(args, f"{reason}; predicting without fusion")
    if args.batch_size < 1:
        return _fail(args, f"--batch-size must be >= 1, got {args.batch_size}")
    writer = open_writer(args.out) if args.out else None
    failed, t0 = 0, time.perf_counter()
    bar = _progress(len(paths), show=writer is not None)
    try:
        for path, r in locate_batches(predictor, paths, args):
            bar.update(1)
            if isinstance(r, ImageLoadError):
                failed += 1
                _error(args, path, str(r), writer)
                continue
            record = result_record(path, r, place_names([r.lat], [r.lon])[0])
            if writer is not None:
                writer.write(record)
            elif args.json:
                print(json.dumps({**record, "prediction": r.as_dict()}))
            else:
                _print_line(path, r, record["place"])
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if writer is not None:
        rate = len(paths) / (time.perf_counter() - t0)
        print(f"wrote {args.out}: {len(paths) - failed} photos located, {failed} unreadable ({rate:.2f} photos/s)", file=sys.stderr)
    return 1 if failed else 0


def locate_batches(predictor, paths: list[Path], args: argparse.Namespace, overlap: bool = False):
    """Yield ``(path, Prediction | ImageLoadError)`` in the order of ``paths``, ``args.batch_size`` photos per
    model forward; within a batch the Predictor segments beside the frozen backbone pass. With ``overlap`` a
    helper thread also decodes batch k + 1 while the model runs on batch k. Off by default: it measured no
    faster on 2 shared cores (benchmarks/predict.py prints both)."""
    from concurrent.futures import ThreadPoolExecutor

    chunks = [paths[s : s + args.batch_size] for s in range(0, len(paths), args.batch_size)]
    pool = ThreadPoolExecutor(1, thread_name_prefix="geosurge-prepare") if overlap else None
    try:
        ahead = _submit(pool, chunks[0]) if chunks else None
        for k in range(len(chunks)):
            loaded = ahead.result()
            ahead = _submit(pool, chunks[k + 1]) if k + 1 < len(chunks) else None
            ok = [img for _, img in loaded if not isinstance(img, Exception)]
            preds = iter(_predict(predictor, ok, args) if ok else [])
            for path, img in loaded:
                yield path, img if isinstance(img, Exception) else next(preds)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _submit(pool, chunk: list[Path]):
    """A future of :func:`_decode` for ``chunk``: run by the pool's thread, or at once without a pool."""
    from concurrent.futures import Future

    if pool is not None:
        return pool.submit(_decode, chunk)
    done: Future = Future()
    done.set_result(_decode(chunk))
    return done


def _decode(chunk: list[Path]) -> list[tuple]:
    """``(path, image or ImageLoadError)`` for each path of a batch."""
    from ..data.images import ImageLoadError, load_image

    out = []
    for path in chunk:
        try:
            out.append((path, load_image(path)))
        except ImageLoadError as e:
            out.append((path, e))
    return out


def _predict(predictor, images: list, args: argparse.Namespace) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return predictor.predict(images, top_k=args.top_k, fusion=not args.no_fusion, views=args.views,
                                 decision=args.decision, batch_size=args.batch_size)


def _print_line(path: Path, r, place: str) -> None:
    """The answer, its chances, the evidence sentence, then per level the cell holding the answer and the
    other cells, every figure labelled by what it is (:attr:`Prediction.ranked_by`)."""
    from ..model.decisions import describe_decision
    from ..model.variants import variant_name

    ref = r.nearest_reference
    ref_txt = f"  nearest reference {ref.id} ({ref.distance_km:.0f} km away)" if ref else ""
    print(f"{path}: {r.lat:.5f}, {r.lon:.5f}  {place}  [{variant_name(r.fusion_used)}, {r.decision}]{ref_txt}")
    print("    " + chances_text(r))
    print("    " + r.evidence_text)
    print(f"    cells holding the answer, with their {r.ranked_by} (answer chosen by {describe_decision(r.decision)}; "
          f"other cells can score higher):")
    for c, others in zip(r.chain, r.runners_up or [[]] * len(r.chain)):
        alt = "; ".join(f"{o.token} {o.score:.2g}" for o in others[:2])
        print(f"    level {c.level}: cell {c.token} ({c.lat:.2f}, {c.lon:.2f}) {c.score:.3g}" + (f"   others: {alt}" if alt else ""))
    for c in (r.runners_up[-1] if r.runners_up else [])[: max(0, len(r.top_k) - 1)]:
        print(f"    also {c.lat:.4f}, {c.lon:.4f}  {r.ranked_by} {c.score:.3g}  cell {c.token}")


def _progress(total: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="predict", unit="photo", file=sys.stderr, disable=not show or total < 2)


def _error(args, path: Path, message: str, writer) -> None:
    if writer is not None:
        writer.write_error(path, message)
    if args.json:
        record = json.dumps({"image": str(path), "error": message})
        if writer is None:
            print(record)
        print(record, file=sys.stderr)
    else:
        print(f"{path}: error: {message}", file=sys.stderr)


def _note(args, text: str) -> None:
    print(json.dumps({"note": text}) if args.json else f"note: {text}", file=sys.stderr)


def _fail(args, message: str) -> int:
    print(json.dumps({"error": message}) if args.json else f"geosurge predict: error: {message}", file=sys.stderr)
    return 2
