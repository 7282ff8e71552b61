"""``geosurge predict``: geolocate photos with a checkpoint."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory (or a fusion/ + rgb/ pair)")
    p.add_argument("--no-fusion", action="store_true", help="use the RGB-only model")
    p.add_argument("--ten-crop", action="store_true", help="average ten crops (slower, usually a little better)")
    p.add_argument("--top-k", type=int, default=1, help="also print the k best cells")
    p.add_argument("--segmenter-path", default=None, help="segmentation model path (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: GPU when present)")
    p.add_argument("--decision", default=None,
                   help="answer rule: argmax (most probable cell) or within:R (most chance within R km); default: the checkpoint's")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")


def chances_text(r) -> str:
    """"62 % within 2,500 km, 21 % within 750 km, ..." (or the product score without a fitted posterior)."""
    if not r.within_km:
        return f"product score {r.score:.3g} (no calibrated chances in this checkpoint)"
    return ", ".join(f"{100 * p:.0f} % within {k:,} km" for k, p in sorted(r.within_km.items(), reverse=True))


def run(args: argparse.Namespace) -> int:
    from ..data.images import ImageLoadError
    from ..geo.geocode import place_names
    from ..predictor import Predictor

    predictor = Predictor.from_pretrained(args.checkpoint, device=args.device, segmenter_path=args.segmenter_path)
    if not args.no_fusion and (reason := predictor.fusion_unavailable_reason()):
        print(f"note: {reason}; predicting without fusion", file=sys.stderr)
    status = 0
    for path in args.images:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                [r] = predictor.predict(path, top_k=args.top_k, fusion=not args.no_fusion, ten_crop=args.ten_crop,
                                         decision=args.decision)
        except ImageLoadError as e:
            print(f"{path}: error: {e}", file=sys.stderr)
            status = 1
            continue
        place = place_names([r.lat], [r.lon])[0]
        if args.json:
            print(json.dumps({"image": str(path), "place": place, **r.as_dict()}))
            continue
        ref = r.nearest_reference
        ref_txt = f"  nearest reference {ref.id} ({ref.distance_km:.0f} km away)" if ref else ""
        print(f"{path}: {r.lat:.5f}, {r.lon:.5f}  {place}  [{'fusion' if r.fusion_used else 'rgb'}, {r.decision}]{ref_txt}")
        print("    " + chances_text(r))
        for c, others in zip(r.chain, r.runners_up or [[]] * len(r.chain)):
            alt = "; ".join(f"{o.token} {o.score:.2g}" for o in others[:2])
            print(f"    level {c.level}: cell {c.token} ({c.lat:.2f}, {c.lon:.2f}) {c.score:.3g}" + (f"   runners-up {alt}" if alt else ""))
        for c in r.top_k[1:]:
            print(f"    also {c.lat:.4f}, {c.lon:.4f}  product score {c.score:.3g}  cell {c.token}")
    return status
