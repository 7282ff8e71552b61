"""The paper's configuration rehearsed end to end, at full model shape, on MP-16-format data:
`python benchmarks/paper_rehearsal.py [--photos 32] [--seg-short-side 256] [--work DIR] [--tiny]`.

CLIP ViT-L/14-336 and OneFormer Swin-L (ADE20K) with random weights (built from ``transformers``
configurations, no download) go through every stage a researcher runs, with the commands they run:

1. ``geosurge segment --msgpack``: OneFormer over ~32 synthetic MP-16 records (msgpack shards + an
   ``IMG_ID,LAT,LON`` CSV), label chunks at the fusion resolution;
2. ``torchrun --nproc-per-node 2 -m geosurge train``: a few steps on 2 gloo processes (micro-batch 2,
   accumulation 2: effective batch 8), exporting a checkpoint the Predictor loads;
3. the ``Predictor``, ``geosurge evaluate`` on an ``im2gps3k_places365.csv``-style file, and the app's handler.

It prints per-stage seconds per photo and peak memory (resident set of the stage's process tree), the
DataLoader's throughput against the model step's, and, from FLOPs per photo counted with
``torch.utils.flop_counter`` (matrix products and convolutions), a projection of GPU-hours for MP-16
(4.7 M photos) beside the paper's 21 hours on 8 A6000s.

On 2 CPU cores OneFormer Swin-L is slow: the segmentation stage runs it with the processor's shorter side
at ``--seg-short-side`` (default 256, the paper's processor uses 512); the FLOP count and one timed photo
are at 512. Random weights give nearly uniform label maps that compress far better than real ones, so the
bytes per photo on disk printed here are not representative: `geosurge segment --layout chunks` prints the
real figure at the end of a run on real photos.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import paper_models  # noqa: E402

MP16_PHOTOS = 4_700_000  # MP-16's round size as the paper and the field give it
GPUS = {  # dense bf16/fp16 tensor peak, TFLOP/s (vendor datasheets; A6000: 309.7 with sparsity / 2)
    "A6000": 154.8,
    "A100": 312.0,
    "H100 SXM": 989.0,
}
UTILIZATION = 0.40
CITIES = [(48.85, 2.35), (40.71, -74.0), (35.68, 139.69), (-33.87, 151.2), (-23.55, -46.63), (19.43, -99.13)]


# ---------------------------------------------------------------------------------------- data
def synthetic_photo(rng: np.random.Generator, size=(640, 480)) -> bytes:
    import io

    from PIL import Image

    w, h = size
    t = np.linspace(0, 1, h)[:, None, None]
    arr = (rng.integers(0, 256, 3) * (1 - t) + rng.integers(0, 256, 3) * t).repeat(w, axis=1).astype(np.uint8)
    for _ in range(6):
        x, y = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        arr[y : y + int(rng.integers(20, h // 2)), x : x + int(rng.integers(20, w // 2))] = rng.integers(0, 256, 3)
    arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def write_data(work: Path, photos: int, held_out: int, seed: int = 0) -> dict:
    """MP-16-format shards + mp16_places365.csv, and val / test photos on disk with their CSVs."""
    from tests.mp16_synth import write_shard

    rng = np.random.default_rng(seed)
    per_shard = 8
    meta = [("IMG_ID", "LAT", "LON", "S3_Label", "S16_Label", "S365_Label", "Prob_indoor", "Prob_natural", "Prob_urban")]
    for k in range(0, photos, per_shard):
        recs = []
        for j in range(k, min(k + per_shard, photos)):
            rid = f"{j % 256:02x}/{j // 256:02x}/{10_000_000 + j}.jpg"
            lat, lon = CITIES[j % len(CITIES)]
            meta.append((rid, lat + rng.normal(0, 0.3), lon + rng.normal(0, 0.3), 0, 0, 0, 0.3, 0.3, 0.4))
            recs.append({"image": synthetic_photo(rng), "id": rid})
        write_shard(work / "mp16/shards" / f"shard_{k // per_shard}.msg", recs)
    with (work / "mp16/mp16_places365.csv").open("w", newline="") as f:
        csv.writer(f).writerows(meta)
    for split in ("val", "test"):
        (work / split / "images").mkdir(parents=True, exist_ok=True)
        rows = [("IMG_ID", "LAT", "LON", "S3_Label", "S16_Label", "S365_Label")]
        for j in range(held_out):
            name = f"{split}{j}.jpg"
            (work / split / "images" / name).write_bytes(synthetic_photo(rng))
            lat, lon = CITIES[j % len(CITIES)]
            rows.append((name, lat + rng.normal(0, 0.3), lon + rng.normal(0, 0.3), 0, 0, 0))
        name = "im2gps3k_places365.csv" if split == "test" else "val.csv"
        with (work / split / name).open("w", newline="") as f:
            csv.writer(f).writerows(rows)
    return {"shards": work / "mp16/shards", "meta": work / "mp16/mp16_places365.csv",
            "val": work / "val/val.csv", "test": work / "test/im2gps3k_places365.csv"}


def train_config(work: Path, data: dict, tiny: bool, steps: int) -> Path:
    import yaml

    d = {
        "model": {"backbone": {"name": "clip", "pretrained": str(work / "clip"), "trainable_blocks": 1},
                  # the paper's fusion (width = CLIP's 1024, 3 blocks, query 128, latent 64) and embeddings (768)
                  "fusion": {"num_blocks": 3, "query_dim": 128, "latent_dim": 64} if not tiny else
                            {"num_blocks": 1, "query_dim": 16, "latent_dim": 8, "num_heads": 4},
                  "geo": {"embed_dim": 768 if not tiny else 32, "tau_min": 1, "tau_maxes": [16, 12, 8, 6, 4, 3, 2]},
                  "segmenter": {"name": "oneformer", "path": str(work / "oneformer")}},
        "data": {"msgpack": str(data["shards"]), "msgpack_meta": str(data["meta"]), "val_csv": str(data["val"]),
                 "val_images": str(data["val"].parent / "images"), "labels": str(work / "labels/train"),
                 "val_labels": str(work / "labels/val"), "num_workers": 1},
        "optim": {"batch_size": 8, "micro_batch": 2, "epochs": 1, "max_steps": steps},
        "run": {"output": str(work / "checkpoint"), "checkpoint_every": 1, "log_every": 1, "progress": False,
                "reference_max": 8},  # the app shows the nearest of 8 indexed training photos
    }
    path = work / "paper-rehearsal.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


# ---------------------------------------------------------------------------------------- stages
def run_stage(name: str, cmd: list[str], env: dict | None = None) -> dict:
    """Run a command, sampling its process tree's resident memory; returns wall seconds, peak GiB, output."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
    peak = 0
    out_lines: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: out_lines.extend(proc.stdout), daemon=True)
    reader.start()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))
        except psutil.Error:
            pass
        time.sleep(0.1)
    reader.join()
    out = "".join(out_lines)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {name} failed ({proc.returncode}):\n{out[-4000:]}")
    return {"seconds": time.perf_counter() - t0, "peak_gib": peak / 2**30, "output": out}


def step_seconds(log: Path) -> list[float]:
    """Seconds between consecutive optimizer steps (the first step, with warm-up, is left out)."""
    times = [r["time"] for r in map(json.loads, log.read_text().splitlines()) if r.get("kind") == "step"]
    return list(np.diff(times))


def inproc_stage(args) -> int:
    """Child mode: time the Predictor and the app's handler on the test photos; print one JSON line."""
    from geosurge import Predictor
    from geosurge.app.settings import AppSettings
    from geosurge.app.ui import Locator

    photos = sorted((args.work / "test/images").glob("*.jpg"))[: args.app_photos + 1]
    p = Predictor.from_pretrained(args.work / "checkpoint")
    p.predict(photos[0])  # warm-up
    t = time.perf_counter()
    for ph in photos[1:]:
        [r] = p.predict(ph)
        assert r.fusion_used and np.isfinite(r.lat)
    predictor_s = (time.perf_counter() - t) / (len(photos) - 1)
    loc = Locator(p, AppSettings(checkpoint=args.work / "checkpoint"))
    t = time.perf_counter()
    for ph in photos[1:]:
        ans = loc(str(ph))
        assert "fusion" in ans.predictions and ans.overlay is not None
    app_s = (time.perf_counter() - t) / (len(photos) - 1)
    print(json.dumps({"predictor_s": predictor_s, "app_s": app_s}))
    return 0


# ---------------------------------------------------------------------------------------- measures
def flops_per_photo(work: Path, tiny: bool) -> dict:
    """FLOPs per photo: OneFormer at the paper's 512 short side, CLIP-L inference, one training step."""
    import torch
    from PIL import Image

    from geosurge.geo.hierarchy import build_hierarchy
    from geosurge.model import GeoSURGE
    from geosurge.model.config import BackboneConfig, FusionConfig, GeoConfig, ModelConfig, SegmenterConfig
    from geosurge.model.segmenters import create_segmenter

    torch.set_num_threads(2)
    paper_models.save_oneformer_processor(work / "oneformer-512", paper_models.ONEFORMER_SHORT_SIDE, 16 if tiny else 77)
    for f in (work / "oneformer").iterdir():
        if f.suffix == ".safetensors" or f.name == "config.json":
            (work / "oneformer-512" / f.name).unlink(missing_ok=True)
            (work / "oneformer-512" / f.name).symlink_to(f)
    seg = create_segmenter(SegmenterConfig("oneformer", str(work / "oneformer-512")))
    img = Image.open(sorted((work / "test/images").glob("*.jpg"))[0]).convert("RGB")
    t = time.perf_counter()
    seg_flops = paper_models.segmenter_flops(seg, img)
    seg512_s = time.perf_counter() - t
    del seg
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-60, 60, 64), rng.uniform(-180, 180, 64)
    h = build_hierarchy(lat, lon, 1, [16, 8, 4])
    cfg = ModelConfig(BackboneConfig("clip", str(work / "clip")), FusionConfig() if not tiny else FusionConfig(num_blocks=1, num_heads=4),
                      GeoConfig(embed_dim=768 if not tiny else 32, tau_min=1, tau_maxes=[16, 8, 4]))
    model = GeoSURGE(cfg, h.num_cells)
    s = model.backbone.preprocess.image_size
    side = model.fusion.tokenizer.label_side
    x = torch.randn(2, 3, s, s)
    y = torch.randint(0, 151, (2, side, side))
    cells = torch.from_numpy(h.assign(lat[:2], lon[:2])).long()
    model.eval()
    with torch.no_grad():
        infer = paper_models.count_flops(lambda: model(x[:1], y[:1]))
    train = paper_models.train_step_flops(model, x, y, cells)
    return {"segment": seg_flops, "segment_512_s": seg512_s, "infer": infer, "train": train}


def loader_throughput(work: Path, data: dict, workers: list[int], batches: int = 6) -> dict[int, float]:
    """Photos per second the training DataLoader delivers (decode, random crop at 336, label lookup, cells)."""
    from geosurge.data.labels import open_label_store
    from geosurge.data.msgpack_shards import MsgpackDataset
    from geosurge.geo.hierarchy import build_hierarchy
    from geosurge.model.backbones import create_backbone
    from geosurge.model.config import BackboneConfig
    from geosurge.train.sources import MsgpackSource

    ds, _ = MsgpackDataset.open(data["shards"], data["meta"])
    lat, lon = ds.coordinates()
    h = build_hierarchy(lat, lon, 1, [16, 8, 4])
    pre = create_backbone(BackboneConfig("clip", str(work / "clip"))).preprocess
    store = open_label_store(work / "labels/train")
    side = store.label_side
    out = {}
    for _ in MsgpackSource(ds, h, pre, store, side, 0, 0).batches(0, 8):  # warm the page cache
        pass
    for w in workers:
        src = MsgpackSource(ds, h, pre, store, side, 0, w)
        n, t = 0, time.perf_counter()
        for epoch in range(batches):
            for x, _, _ in src.batches(epoch, 8):
                n += x.shape[0]
        out[w] = n / (time.perf_counter() - t)
    return out


def projection(flops: dict) -> list[str]:
    """GPU-hours for MP-16 from FLOPs per photo at an assumed utilization of the dense tensor peak."""
    lines = [f"| work | FLOPs per photo | GPU-hours per pass over MP-16 ({MP16_PHOTOS / 1e6:.1f} M photos) at "
             f"{UTILIZATION:.0%} of peak: " + ", ".join(f"{g} ({p:.0f} TFLOP/s)" for g, p in GPUS.items()) + " |",
             "| --- | ---: | --- |"]
    for name, key in (("segmentation (OneFormer Swin-L, shorter side 512, 8 photos per forward)", "segment"),
                      ("training epoch (CLIP-L/14-336 frozen but last block, fusion, 7 levels)", "train"),
                      ("inference (one pass, e.g. validation or the reference index)", "infer")):
        hours = {g: MP16_PHOTOS * flops[key] / (p * 1e12 * UTILIZATION) / 3600 for g, p in GPUS.items()}
        lines.append(f"| {name} | {flops[key] / 1e9:.0f} G | " + ", ".join(f"{g} {h:.1f}" for g, h in hours.items()) + " |")
    paper_budget = 21 * 8 * GPUS["A6000"] * 1e12 * UTILIZATION * 3600
    epochs = paper_budget / (MP16_PHOTOS * flops["train"])
    lines.append("")
    lines.append(f"The paper's 21 h on 8 A6000s is {21 * 8} A6000-hours; at {UTILIZATION:.0%} of their peak that budget holds "
                 f"{epochs:.1f} training epochs of the FLOPs counted here (the paper does not give its epoch count; "
                 f"early stopping after 4 epochs without gain). Segmentation is extra: {MP16_PHOTOS * flops['segment'] / (GPUS['A6000'] * 1e12 * UTILIZATION) / 3600:.0f} A6000-hours, "
                 f"if OneFormer reaches {UTILIZATION:.0%} of peak: plausible only with a batch per forward, which `geosurge segment` "
                 f"now runs (8 photos of one processed size per forward by default, the same label maps as one at a time); "
                 f"one photo per forward, as before, leaves a large GPU mostly idle. `benchmarks/gpu_check.py` measures both.")
    return lines


# ---------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=32, help="synthetic MP-16 records")
    ap.add_argument("--held-out", type=int, default=6, help="validation photos and test photos (each)")
    ap.add_argument("--seg-short-side", type=int, default=256, help="OneFormer processor's shorter side in the segmentation stage")
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps of the 2-process training run")
    ap.add_argument("--app-photos", type=int, default=2, help="photos timed through the Predictor and the app's handler")
    ap.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--tiny", action="store_true", help="small models of the same families (a smoke run, not the paper's shapes)")
    ap.add_argument("--stage", choices=["inproc"], default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def rehearse(args) -> dict:
    work, py = args.work, sys.executable
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    paper_models.save_clip(work / "clip", args.tiny)
    paper_models.save_oneformer(work / "oneformer", args.seg_short_side, args.tiny)
    data = write_data(work, args.photos, args.held_out)
    print(f"built random-weight models and {args.photos} MP-16-format records in {time.perf_counter() - t:.0f} s", flush=True)
    res = {}
    seg = ["-m", "geosurge", "segment", "--segmenter", "oneformer", "--segmenter-path", str(work / "oneformer"),
           "--no-progress", "--chunk-size", "8", "--label-side", "336" if not args.tiny else "112"]
    res["segment"] = run_stage("segment", [py, *seg, "--msgpack", str(data["shards"]), "--out", str(work / "labels/train")],
                               {"PYTHONPATH": str(ROOT)})
    res["segment"]["photos"] = args.photos
    # validation photos: a store of their own, one PNG per photo (the CSV layout), as docs/training.md does it
    run_stage("segment-val", [py, *seg, "--csv", str(data["val"]), "--out", str(work / "labels/val")], {"PYTHONPATH": str(ROOT)})
    print(f"segmentation: {res['segment']['seconds']:.0f} s", flush=True)
    cfg = train_config(work, data, args.tiny, args.steps)
    res["train"] = run_stage("train", [py, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29671",
                                       "-m", "geosurge", "train", "--config", str(cfg)], env)
    res["train"]["step_s"] = step_seconds(work / "checkpoint.work/log.jsonl")
    print(f"training: {res['train']['seconds']:.0f} s", flush=True)
    res["inproc"] = run_stage("predictor+app", [py, __file__, "--stage", "inproc", "--work", str(work),
                                                "--app-photos", str(args.app_photos)], {"PYTHONPATH": str(ROOT)})
    res["inproc"].update(json.loads(res["inproc"]["output"].strip().splitlines()[-1]))
    res["evaluate"] = run_stage("evaluate", [py, "-m", "geosurge", "evaluate", "--checkpoint", str(work / "checkpoint"),
                                             "--csv", str(data["test"]), "--out", str(work / "eval"), "--labels",
                                             str(work / "labels/test"), "--cache-dir", str(work / "cache")], {"PYTHONPATH": str(ROOT)})
    report = json.loads((work / "eval/report.json").read_text())
    assert report["n"] == args.held_out, report["n"]
    print(f"predictor, app, evaluate: done ({time.perf_counter() - t:.0f} s so far)", flush=True)
    res["loader"] = loader_throughput(work, data, [0, 1, 2])
    res["flops"] = flops_per_photo(work, args.tiny)
    return res


def report_lines(res: dict, args) -> list[str]:
    from geosurge.data.label_chunks import ChunkStore

    seg, tr, ip, ev = res["segment"], res["train"], res["inproc"], res["evaluate"]
    rate = [float(x.split(" photos/s")[0].rsplit(" ", 1)[-1]) for x in seg["output"].splitlines() if "photos/s in all" in x][0]
    store = ChunkStore(args.work / "labels/train")
    bytes_pp = sum(store.chunk_path(n).stat().st_size for n in store.chunk_names()) / len(store)
    photos_per_step = 8
    step = float(np.median(tr["step_s"])) if tr["step_s"] else float("nan")
    lines = [f"## Paper rehearsal ({'tiny smoke models' if args.tiny else 'CLIP ViT-L/14-336 + OneFormer Swin-L, random weights'}; "
             f"{os.cpu_count()} CPU cores, CPU only)", "",
             "| stage | seconds per photo | peak memory (GiB, process tree) | notes |", "| --- | ---: | ---: | --- |",
             f"| segment (OneFormer, shorter side {args.seg_short_side}) | {1 / rate:.2f} | {seg['peak_gib']:.2f} | "
             f"{seg['photos']} photos, 1 process; {bytes_pp / 1e3:.1f} kB per photo on disk (shorter side {store.short_side}) |",
             f"| segment (OneFormer, shorter side 512, the paper's) | {res['flops']['segment_512_s']:.2f} | - | one photo, under the FLOP counter |",
             f"| train (2 gloo processes, effective batch 8) | {step / photos_per_step:.2f} | {tr['peak_gib']:.2f} | "
             f"median of {len(tr['step_s'])} step intervals, {photos_per_step} photos per step |",
             f"| Predictor (OneFormer + CLIP-L + fusion + 7-level matching) | {ip['predictor_s']:.2f} | {ip['peak_gib']:.2f} | "
             f"{args.app_photos} photos, batch 1 |",
             f"| app handler (segmentation, both models, map, overlay) | {ip['app_s']:.2f} | (same process) | {args.app_photos} photos |",
             f"| geosurge evaluate (segment missing + encode + report) | {ev['seconds'] / args.held_out:.2f} | {ev['peak_gib']:.2f} | "
             f"{args.held_out} photos of an im2gps3k_places365.csv, including model loading |", ""]
    train_pps = photos_per_step / step
    lines += ["Loader against model (CPU, this machine): the training DataLoader (msgpack decode, random crop at 336, "
              "label-chunk lookup, cells) delivers " + ", ".join(f"{v:.1f} photos/s with {k} worker(s)" for k, v in res["loader"].items())
              + f"; the 2-process training step consumes {train_pps:.2f} photos/s.", ""]
    gpu_pps = GPUS["A100"] * 1e12 * UTILIZATION / res["flops"]["train"]
    per_worker = res["loader"][1]
    lines += [f"On an A100 at {UTILIZATION:.0%} the training step would consume {gpu_pps:.0f} photos/s per GPU "
              f"({res['flops']['train'] / 1e9:.0f} GFLOPs per photo); one loader worker here does "
              f"{res['loader'].get(1, float('nan')):.1f} photos/s, so each GPU needs about {gpu_pps / per_worker:.0f} "
              f"loader workers (CPU cores) of this speed to never wait.", ""]
    return lines + projection(res["flops"])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.stage == "inproc":
        return inproc_stage(args)
    with tempfile.TemporaryDirectory(prefix="geosurge-rehearsal-") as tmp:
        args.work = args.work or Path(tmp)
        args.work.mkdir(parents=True, exist_ok=True)
        res = rehearse(args)
        print("\n".join(report_lines(res, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
