"""``geosurge segment``: precompute ADE20K label maps so training never runs the segmenter.

One process, or many: ``torchrun --nproc-per-node N -m geosurge segment ...`` (or ``torchrun --no-python
... geosurge segment ...``; several nodes with ``--nnodes``) gives each rank its share of the photos,
deterministically; restarting the same command after a kill finishes the job without redoing done work.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

#: the paper's fusion lattice: CLIP ViT-L/14-336 samples 14 x 14 labels per patch of its 24 x 24 grid
PAPER_LABEL_SIDE = 336
#: photos per forward by default on a GPU (benchmarks/gpu_check.py --seg-batch); on the CPU batches measured
#: slower for both segmenters (python benchmarks/segmenter.py --batch 8 --oneformer: 0.76-0.82 x), so 1 there
GPU_BATCH = {"oneformer": 8}


def default_batch(segmenter: str) -> int:
    import torch

    return GPU_BATCH.get(segmenter, 1) if torch.cuda.is_available() else 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, nargs="+", help="image,lat,lon CSV file(s) (IMG_ID,LAT,LON also read)")
    src.add_argument("--msgpack", help="msgpack shards as GeoEstimation ships MP-16 (a directory of *.msg, a glob or a file)")
    p.add_argument("--images", type=Path, default=None, help="image root (default: each CSV's folder)")
    p.add_argument("--out", required=True, type=Path, help="label directory")
    p.add_argument("--segmenter", default="deeplab-ade20k", help="segmenter name (deeplab-ade20k, oneformer)")
    p.add_argument("--segmenter-path", default=None, help="model file / directory / hub id (default: the segmenter's)")
    p.add_argument("--input-size", type=int, default=None,
                   help="side of the square DeepLab runs at (default: the model's 513); must match the model config's segmenter.input_size")
    p.add_argument("--layout", choices=["png", "chunks"], default=None,
                   help="png: one PNG per photo, mirroring the ids (default for --csv); chunks: chunk files at the fusion "
                        "resolution with a done-index (default for --msgpack; what MP-16-scale runs use)")
    p.add_argument("--label-side", type=int, default=PAPER_LABEL_SIDE,
                   help="chunks: samples per side the fusion module takes from a crop (backbone grid x label_samples; "
                        f"paper {PAPER_LABEL_SIDE}); maps are stored with their shorter side at this / 0.875")
    p.add_argument("--chunk-size", type=int, default=256, help="chunks: photos per chunk file (the unit of resumption)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="photos per segmenter forward (default: 8 for oneformer on a GPU, else 1: on the CPU batches measured "
                        "slower, benchmarks/segmenter.py --batch; label maps are the same at any size)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _distributed() -> tuple[int, int]:
    """(rank, world) from torchrun's environment; joins a gloo group for the final tally."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch
        import torch.distributed as dist

        if torch.cuda.is_available():  # each rank's segmenter on its own GPU
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            dist.init_process_group("gloo")  # only a tally goes through it: gloo on GPUs too
    return rank, world


def _tally(local: dict, world: int) -> list[dict]:
    if world == 1:
        return [local]
    import torch.distributed as dist

    out: list = [None] * world
    dist.all_gather_object(out, local)
    return out


def run(args: argparse.Namespace) -> int:
    from ..model.config import SegmenterConfig
    from ..model.segmenters import create_segmenter

    layout = args.layout or ("chunks" if args.msgpack else "png")
    if args.msgpack and layout != "chunks":
        raise ValueError("msgpack shards have no file per photo to mirror: use --layout chunks")
    rank, world = _distributed()
    cfg = SegmenterConfig(args.segmenter, args.segmenter_path, args.input_size)
    seg = create_segmenter(cfg)
    args.batch_size = args.batch_size or default_batch(args.segmenter)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    progress = not args.no_progress and rank == 0
    if layout == "png":
        local = _run_png(args, cfg, seg, rank, world, progress)
    else:
        local = _run_chunks(args, cfg, seg, rank, world, progress)
    ranks = _tally(local, world)
    if rank == 0:
        photos = sum(r["photos"] for r in ranks)
        slowest = max(r["seconds"] for r in ranks)
        rate = photos / slowest if slowest > 0 else 0.0
        per_rank = ", ".join(f"{r['photos'] / r['seconds']:.2f}" if r["seconds"] > 0 else "-" for r in ranks)
        print(f"segment: {world} process(es), {photos} photos in {slowest:.1f} s: {rate:.2f} photos/s in all "
              f"(per process: {per_rank}); failed {sum(r['failed'] for r in ranks)}")
        if layout == "chunks":
            from ..data.label_chunks import ChunkStore

            store = ChunkStore(args.out)
            sizes = [store.chunk_path(n).stat().st_size for n in store.chunk_names()]
            if len(store):
                print(f"segment: {len(store)} label maps in {len(sizes)} chunks, {sum(sizes) / len(store):.0f} bytes per photo "
                      f"on disk (PNG, shorter side {store.short_side} px)")
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 1 if any(r["failed"] for r in ranks) else 0


def _run_png(args, cfg, seg, rank: int, world: int, progress: bool) -> dict:
    import time

    from ..data.labels import LabelStore, segment_records
    from ..data.records import read_records

    store = LabelStore(args.out, cfg)
    t0, photos, failed = time.perf_counter(), 0, 0
    for csv_path in args.csv:
        records, skipped = read_records(csv_path, args.images)
        if skipped.total and rank == 0:
            print(f"{csv_path}: {skipped.summary()}")
        mine = records.subset(list(range(rank, len(records), world)))  # row i to rank i % world
        report = segment_records(mine, seg, store, progress=progress, batch_size=args.batch_size)
        print(f"{csv_path}{f' [rank {rank}]' if world > 1 else ''}: {report.summary()}")
        photos += report.done
        failed += report.failed.total
    return {"photos": photos, "seconds": time.perf_counter() - t0, "failed": failed}


def _run_chunks(args, cfg, seg, rank: int, world: int, progress: bool) -> dict:
    from ..data.label_chunks import ChunkStore, csv_units, my_units, segment_units, shard_units
    from ..data.records import read_records

    if rank == 0:  # one process creates the manifest; the others open it after the barrier
        ChunkStore(args.out, cfg, args.label_side)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    store = ChunkStore(args.out, cfg, args.label_side)
    if args.msgpack:
        from ..data.msgpack_shards import list_shards

        units = shard_units(list_shards(args.msgpack))
    else:
        units = []
        for k, csv_path in enumerate(args.csv):
            records, skipped = read_records(csv_path, args.images)
            if skipped.total and rank == 0:
                print(f"{csv_path}: {skipped.summary()}")
            units += csv_units(records, f"{Path(csv_path).stem}{k}", args.chunk_size)
    if len(units) < world and rank == 0:
        print(f"segment: warning: {len(units)} units for {world} processes; some stay idle (use more, smaller shards)")
    report = segment_units(my_units(units, rank, world), seg, store, args.chunk_size, progress, args.batch_size)
    print(f"segment{f' [rank {rank}]' if world > 1 else ''}: {report.summary()}")
    return {"photos": report.photos, "seconds": report.seconds, "failed": report.failed.total}
