"""A few minutes on one CUDA GPU: does the paper's configuration run there, how fast, in how much memory?
`python benchmarks/gpu_check.py [--micro-batch 128] [--no-segmenter]`

1. a training step of CLIP ViT-L/14-336 + the paper's fusion + 7-level embeddings, under bf16 autocast
   and under fp16 autocast with loss scaling (GradScaler), at the paper's micro-batch: seconds per step,
   photos per second, peak GPU memory;
2. the Predictor on the GPU (OneFormer Swin-L + CLIP-L + fusion + hierarchical matching over 7 levels):
   ms per photo at batch 1 and at batch 64, with segmentation and with label maps given (model + matching);
3. OneFormer alone, one photo per forward vs ``--seg-batch`` photos per forward (what ``geosurge segment
   --batch-size`` runs): ms per photo, peak memory, and how many label pixels agree;
4. the app's request handler on the GPU (segmentation, both models, map, overlay): ms per photo.

Models have random weights, built from ``transformers`` configurations (no download). Any error on the
CUDA path is printed with its traceback and the script exits 1; without CUDA it says so and exits 2.
``--device cpu --dry`` runs every check with tiny models of the same families on the CPU (what the test
suite does to keep this script working; its figures mean nothing).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import paper_models  # noqa: E402

# 7 levels with the paper's tau_min 50 / tau_max 25000 ... 500 give about 642 ... 22,840 cells on MP-16
from geosurge.geo.hierarchy import PAPER_TAU_MAXES, PAPER_TAU_MIN  # noqa: E402


class Check:
    """Collects rows of the table and failures; a failure never hides behind a later success."""

    def __init__(self, device: torch.device):
        self.device, self.rows, self.failures = device, [], []

    def run(self, name: str, fn, *args):
        print(f"-- {name}", flush=True)
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the script fails
            traceback.print_exc()
            self.failures.append(f"{name}: {type(e).__name__}: {e}")
            return None

    def row(self, what: str, value: str, memory: str) -> None:
        self.rows.append((what, value, memory))
        print(f"   {what}: {value} ({memory})", flush=True)

    def reset_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def memory(self) -> str:
        if self.device.type == "cuda":
            return f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated"
        import psutil

        return f"RSS {psutil.Process().memory_info().rss / 2**30:.2f} GiB"

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def build_hierarchy_like_paper(dry: bool):
    """A 7-level hierarchy from random land-like points: paper-like cell counts (thousands at the finest level)."""
    from geosurge.geo.hierarchy import build_hierarchy

    rng = np.random.default_rng(0)
    n = 2_000 if dry else 400_000
    lat = np.degrees(np.arcsin(rng.uniform(-0.85, 0.95, n)))
    lon = rng.uniform(-180, 180, n)
    if dry:
        return build_hierarchy(lat, lon, 1, [t // 100 for t in PAPER_TAU_MAXES])
    scale = n / 4_700_000  # the paper's taus scaled to the number of points
    return build_hierarchy(lat, lon, max(1, int(PAPER_TAU_MIN * scale)), [max(2, int(t * scale)) for t in PAPER_TAU_MAXES])


def model_config(work: Path, dry: bool):
    from geosurge.model.config import BackboneConfig, FusionConfig, GeoConfig, ModelConfig, SegmenterConfig

    fusion = FusionConfig(num_blocks=1, num_heads=4, query_dim=16, latent_dim=8) if dry else FusionConfig()
    return ModelConfig(BackboneConfig("clip", str(work / "clip")), fusion,
                       GeoConfig(embed_dim=32 if dry else 768, tau_min=1 if dry else PAPER_TAU_MIN, tau_maxes=list(PAPER_TAU_MAXES)),
                       SegmenterConfig("oneformer", str(work / "oneformer")))


def training_step(chk: Check, cfg, hierarchy, micro: int, dtype: torch.dtype, steps: int = 3) -> None:
    from geosurge.model import GeoSURGE

    chk.reset_memory()
    dev = chk.device
    model = GeoSURGE(cfg, hierarchy.num_cells).to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(dev.type) if dtype == torch.float16 else None
    s = model.backbone.preprocess.image_size
    side = model.fusion.tokenizer.label_side
    x = torch.randn(micro, 3, s, s, device=dev)
    y = torch.randint(0, 151, (micro, side, side), device=dev)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(hierarchy.finest.centroids), micro)
    cells = torch.from_numpy(hierarchy.assign(*hierarchy.finest.centroids[idx].T)).long().to(dev)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=dtype):
            feats = model.encode(x, y)
            if dev.type == "cuda":
                assert feats.dtype == torch.float32  # encode() normalizes in float32; the tokens ran in `dtype`
        loss, _, _ = model.geo.loss(feats.float(), cells)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} under {dtype}")
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        chk.sync()
        if i:  # the first step pays for kernels' selection and allocation
            times.append(time.perf_counter() - t)
    sec = float(np.median(times))
    name = {torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}[dtype]
    chk.row(f"training step, {name}, micro-batch {micro}", f"{sec:.3f} s/step, {micro / sec:.0f} photos/s", chk.memory())
    del model, opt


def make_checkpoint(chk: Check, work: Path, cfg, hierarchy) -> Path:
    from geosurge.model import GeoSURGE
    from geosurge.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(work / "checkpoint", GeoSURGE(cfg, hierarchy.num_cells), hierarchy)


def photos(work: Path, n: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        p = work / f"photo{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(p, quality=85)
        out.append(p)
    return out


def predictor_timing(chk: Check, ckpt: Path, imgs: list[Path], segmenter: bool) -> None:
    from geosurge import Predictor

    chk.reset_memory()
    p = Predictor.from_pretrained(ckpt, device=chk.device, segmenter="auto" if segmenter else None)
    if segmenter and not p.fusion_available:
        raise RuntimeError(f"the segmenter did not load: {p.fusion_unavailable_reason()}")
    p.predict(imgs[:2])  # warm-up
    label = [np.random.default_rng(i).integers(1, 151, (480, 640)).astype(np.uint8) for i in range(len(imgs))]
    for batch in (1, len(imgs)):
        for given in ((False, True) if segmenter else (True,)):
            chk.sync()
            t = time.perf_counter()
            reps = 3 if batch == 1 else 1
            for r in range(reps):
                got = p.predict(imgs[:batch], label_maps=label[:batch] if given else None)
            chk.sync()
            ms = (time.perf_counter() - t) / (reps * batch) * 1000
            assert len(got) == batch and all(np.isfinite(g.lat) and g.fusion_used for g in got)
            what = "label maps given (model + 7-level matching)" if given else "with OneFormer segmentation"
            chk.row(f"Predictor, batch {batch}, {what}", f"{ms:.1f} ms/photo", chk.memory())


def segmenter_timing(chk: Check, work: Path, imgs: list[Path], batch: int) -> None:
    from PIL import Image

    from geosurge.model.config import SegmenterConfig
    from geosurge.model.segmenters.oneformer import OneFormerADE20K

    seg = OneFormerADE20K(SegmenterConfig("oneformer", str(work / "oneformer")), device=chk.device)
    images = [Image.open(p).convert("RGB") for p in imgs[:batch]]
    seg.segment_batch(images)  # warm-up
    maps = {}
    for b in (1, batch):
        chk.reset_memory()
        chk.sync()
        t = time.perf_counter()
        maps[b] = [lab for s in range(0, len(images), b) for lab in seg.segment_batch(images[s : s + b])]
        chk.sync()
        ms = (time.perf_counter() - t) / len(images) * 1000
        chk.row(f"OneFormer segmentation, {b} photo(s) per forward", f"{ms:.1f} ms/photo", chk.memory())
    agree = float(np.mean([(a == c).mean() for a, c in zip(maps[1], maps[batch])]))
    chk.row(f"OneFormer label maps, batch {batch} vs 1", f"{100 * agree:.3f} % of pixels agree", "-")


def app_timing(chk: Check, ckpt: Path, imgs: list[Path]) -> None:
    from geosurge import Predictor
    from geosurge.app.settings import AppSettings
    from geosurge.app.ui import Locator

    chk.reset_memory()
    loc = Locator(Predictor.from_pretrained(ckpt, device=chk.device), AppSettings(checkpoint=ckpt))
    loc(str(imgs[0]))  # warm-up
    t = time.perf_counter()
    for p in imgs[1:4]:
        ans = loc(str(p))
        assert ans.predictions and ans.overlay is not None, ans.summary
    ms = (time.perf_counter() - t) / 3 * 1000
    chk.row("app handler (segmentation, both models, map, overlay)", f"{ms:.0f} ms/photo", chk.memory())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --dry)")
    ap.add_argument("--dry", action="store_true", help="tiny models: checks the script's paths, not the GPU")
    ap.add_argument("--micro-batch", type=int, default=None, help="training micro-batch (default 128, the paper config's; --dry 4)")
    ap.add_argument("--batch", type=int, default=None, help="Predictor batch (default 64; --dry 4)")
    ap.add_argument("--seg-batch", type=int, default=None, help="OneFormer photos per forward (default 8, geosurge segment's; --dry 2)")
    ap.add_argument("--no-segmenter", action="store_true", help="skip OneFormer (Predictor with label maps only, no app)")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False): this check needs one GPU and a "
              "CUDA build of torch. `--device cpu --dry` runs its code paths with tiny models.", file=sys.stderr)
        return 2
    if dev.type == "cpu" and not args.dry:
        print("gpu_check: --device cpu is only meaningful with --dry", file=sys.stderr)
        return 2
    micro, batch = args.micro_batch or (4 if args.dry else 128), args.batch or (4 if args.dry else 64)
    seg_batch = args.seg_batch or (2 if args.dry else 8)
    if dev.type == "cuda":
        print(f"gpu_check: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    chk = Check(dev)
    with tempfile.TemporaryDirectory(prefix="geosurge-gpu-check-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        paper_models.save_clip(work / "clip", tiny=args.dry)
        if not args.no_segmenter:
            paper_models.save_oneformer(work / "oneformer", paper_models.ONEFORMER_SHORT_SIDE, tiny=args.dry)
        hierarchy = build_hierarchy_like_paper(args.dry)
        cfg = model_config(work, args.dry)
        print(f"   models and a hierarchy of {hierarchy.num_cells} cells built in {time.perf_counter() - t0:.0f} s")
        for dtype in (torch.bfloat16, torch.float16):
            chk.run(f"training step ({dtype})", training_step, chk, cfg, hierarchy, micro, dtype)
        ckpt = chk.run("checkpoint", make_checkpoint, chk, work, cfg, hierarchy)
        imgs = photos(work, max(batch, seg_batch, 4))
        if ckpt is not None:
            chk.run("Predictor", predictor_timing, chk, ckpt, imgs, not args.no_segmenter)
            if not args.no_segmenter:
                chk.run("segmenter batch", segmenter_timing, chk, work, imgs, seg_batch)
                chk.run("app handler", app_timing, chk, ckpt, imgs)
    print("\n| check | speed | memory |\n| --- | --- | --- |")
    for what, value, mem in chk.rows:
        print(f"| {what} | {value} | {mem} |")
    if chk.failures:
        print("\ngpu_check FAILED:\n  " + "\n  ".join(chk.failures), file=sys.stderr)
        return 1
    print(f"\ngpu_check: all checks passed on {dev}{' (dry run: tiny models, figures meaningless)' if args.dry else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
