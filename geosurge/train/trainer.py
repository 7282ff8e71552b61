"""The training loop (paper §IV): per-level InfoNCE, AdamW, step decay, early stopping, exact resume.

One process or many (``torchrun`` + DistributedDataParallel; NCCL on GPUs, gloo on CPUs). Progress
bars and a JSON-lines log in the work directory; resumable state every ``checkpoint_every`` steps and
at each epoch end; the best validation epoch becomes a checkpoint directory the Predictor loads.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..data.images import ImageLoadError, load_image
from ..data.labels import LabelStore, open_label_store, segment_records
from ..data.records import GeoRecords, SkipReport, read_records
from ..geo.hierarchy import Hierarchy, build_hierarchy
from ..geo.metrics import accuracy_report
from ..geo.prior import read_photo_density
from ..model.checkpoint import load_checkpoint, publish_checkpoint, save_checkpoint
from ..model.encode import build_reference_index
from ..model.geosurge import GeoSURGE
from ..model.hierarchical import HierarchicalScorer
from ..model.posterior import training_counts
from .config import TrainConfig
from .loss import geo_loss
from .sources import ImageDataset, ImageSource, MsgpackSource, ShardSource, ViewSource
from .state import load_state, save_state
from .views import ViewSet, label_side, load_or_build_views

LOG = "log.jsonl"
BEST = "best"
LATEST = "latest"  # exported at every epoch end: the Predictor can load it while training runs


# ---------------------------------------------------------------------------------------- helpers
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _init_distributed(device: str | None) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    d = _Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        dev = torch.device(f"cuda:{d.local}") if world > 1 or device in (None, "cuda") else torch.device(device)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device or "cpu")
    return d, dev


class _Logger:
    def __init__(self, work_dir: Path, enabled: bool):
        self.path, self.enabled = work_dir / LOG, enabled

    def __call__(self, **record: Any) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


def _better(metric: str, new: float, old: float | None) -> bool:
    if old is None or not math.isfinite(old):
        return math.isfinite(new)
    return new < old if metric in ("median_km", "mean_km") else new > old


def predict_points(scorer: HierarchicalScorer, feats: torch.Tensor) -> np.ndarray:
    """(n, 2) predicted lat/lon: centroid of the best finest cell by hierarchical product score."""
    return scorer.locate(feats)[0]


@torch.no_grad()
def view_features(model: GeoSURGE, views: ViewSet, batch_images: int = 32) -> torch.Tensor:
    """Ten-crop features (renormalized mean of the views) of cached views."""
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(views), batch_images):
        h = views.hidden[s : s + batch_images]
        n, v = h.shape[:2]
        lab = views.labels[s : s + batch_images].flatten(0, 1).long().to(device) if views.labels is not None else None
        f = model.encode_hidden(h.flatten(0, 1).float().to(device), lab).view(n, v, -1).mean(1)
        out.append(F.normalize(f, dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def image_features(model: GeoSURGE, records: GeoRecords, store: LabelStore | None, batch: int = 64,
                   report: SkipReport | None = None, progress: bool = False) -> tuple[torch.Tensor, np.ndarray]:
    """Centre-crop features of readable images; returns (features, kept row indices)."""
    from ..model.encode import encode_images

    feats, keep = [], []
    starts = range(0, len(records), batch)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="encoding", unit="batch", leave=False)
    for s in starts:
        imgs, maps, rows = [], [], []
        for i in range(s, min(s + batch, len(records))):
            try:
                img = load_image(records.path(i))
                lab = store.load(records.ids[i], img.size) if model.uses_fusion else None
            except (ImageLoadError, FileNotFoundError) as e:
                if report is not None:
                    report.add("unreadable image or label map", f"{records.ids[i]} ({e})")
                continue
            imgs.append(img)
            maps.append(lab)
            rows.append(i)
        if imgs:
            feats.append(encode_images(model, imgs, maps if model.uses_fusion else None, batch_size=batch))
            keep.extend(rows)
    dim = model.cfg.geo.embed_dim
    return (torch.cat(feats) if feats else torch.zeros(0, dim)), np.asarray(keep, dtype=np.int64)


# ---------------------------------------------------------------------------------------- entry
def train(cfg: TrainConfig, resume: bool = False) -> list[Path]:
    """Train every variant the config names (``run.variants``) or the single model; returns checkpoint dirs."""
    out = Path(cfg.run.output)
    if not cfg.run.variants:
        return [_train_one(cfg, out, Path(cfg.run.work_dir or f"{out}.work"), resume)]
    done = []
    for v in cfg.run.variants:
        if v not in ("fusion", "rgb"):
            raise ValueError(f"run.variants entries must be 'fusion' or 'rgb', not {v!r}")
        c = copy.deepcopy(cfg)
        c.model.fusion.enabled = v == "fusion"
        work = Path(cfg.run.work_dir or f"{out}.work") / v
        done.append(_train_one(c, out / v, work, resume))
    return done


def _train_one(cfg: TrainConfig, output: Path, work_dir: Path, resume: bool) -> Path:
    t0 = time.time()
    dd, device = _init_distributed(cfg.run.device)
    work_dir.mkdir(parents=True, exist_ok=True)
    if not resume and dd.main:
        for f in (work_dir / LOG, work_dir / "train_state.json", work_dir / "train_state.safetensors"):
            f.unlink(missing_ok=True)
    dd.barrier()
    log = _Logger(work_dir, dd.main)
    say = print if dd.main else (lambda *a, **k: None)
    data, optim, run = cfg.data, cfg.optim, cfg.run
    skipped = SkipReport()

    # ---- data and hierarchy
    shards = msgpack = None
    if data.msgpack:
        from ..data.msgpack_shards import MsgpackDataset

        if not data.msgpack_meta:
            raise ValueError("data.msgpack needs data.msgpack_meta: the CSV of IMG_ID, LAT, LON (mp16_places365.csv)")
        msgpack, rep = MsgpackDataset.open(data.msgpack, data.msgpack_meta)
        skipped.merge(rep)
        lats, lons = msgpack.coordinates()
        train_rec = None
        if not data.val_csv:
            raise ValueError("training from msgpack shards needs data.val_csv for validation")
    elif data.shards:
        from ..data.shards import read_shard_index

        urls, lats, lons = read_shard_index(data.shards)
        train_rec = None
        shards = (urls, len(lats))
        if not data.val_csv:
            raise ValueError("training from shards needs data.val_csv for validation")
    else:
        if not data.train_csv:
            raise ValueError("set data.train_csv (image,lat,lon rows) or data.shards in the config")
        train_rec, rep = read_records(data.train_csv, data.images)
        skipped.merge(rep)
        lats, lons = train_rec.lats, train_rec.lons
    if data.val_csv:
        val_rec, rep = read_records(data.val_csv, data.val_images or data.images)
        skipped.merge(rep)
    else:
        perm = np.random.default_rng(run.seed).permutation(len(train_rec))
        n_val = max(1, int(round(data.val_fraction * len(train_rec))))
        val_rec, train_rec = train_rec.subset(np.sort(perm[:n_val])), train_rec.subset(np.sort(perm[n_val:]))
        lats, lons = train_rec.lats, train_rec.lons
    if len(lats) == 0 or len(val_rec) == 0:
        raise ValueError("no usable training or validation rows (" + skipped.summary() + ")")
    hierarchy = build_hierarchy(*_partition_points(cfg.model.geo.partition, lats, lons), cfg.model.geo.tau_min, cfg.model.geo.tau_maxes)
    if min(hierarchy.num_cells) == 0:
        raise ValueError(f"the hierarchy has an empty level ({hierarchy.num_cells} cells from {len(lats)} photos): "
                         f"lower model.geo.tau_min ({cfg.model.geo.tau_min}) or add photos")
    say(f"hierarchy: {hierarchy.num_cells} cells over {len(hierarchy.levels)} levels from {len(lats)} photos")
    if skipped.total:
        say(skipped.summary())

    # ---- model
    torch.manual_seed(run.seed)
    model = GeoSURGE(cfg.model, hierarchy.num_cells).to(device)
    side = label_side(model)
    store = val_store = None
    if model.uses_fusion:
        if not data.labels:
            raise ValueError("a fusion model trains on precomputed label maps: set data.labels (see `geosurge segment`)")
        store = open_label_store(data.labels, cfg.model.segmenter, side)
        # validation photos' maps: their own store (PNG per photo) keeps MP-16's chunk index out of memory
        val_store = open_label_store(data.val_labels, cfg.model.segmenter, side) if data.val_labels else store
        if data.segment_missing and dd.main:
            from ..model.segmenters import create_segmenter

            seg = None
            for rec, st in ((train_rec, store), (val_rec, val_store)):
                # chunk stores are written by `geosurge segment` only
                if rec is not None and isinstance(st, LabelStore) and any(not st.has(i) for i in rec.ids):
                    seg = seg or create_segmenter(cfg.model.segmenter)
                    r = segment_records(rec, seg, st, progress=run.progress)
                    say(r.summary())
        dd.barrier()

    # ---- sources
    if data.view_cache and shards is None and msgpack is None:
        views = None
        if dd.main:  # one process builds the cache, the others read it
            views = load_or_build_views(model, train_rec, store, data.cache_dir, run.progress, skipped, data.views)
            val_views = load_or_build_views(model, val_rec, val_store, data.cache_dir, run.progress, skipped, data.views)
        dd.barrier()
        if not dd.main:
            views = load_or_build_views(model, train_rec, store, data.cache_dir, False, views=data.views)
            val_views = load_or_build_views(model, val_rec, val_store, data.cache_dir, False, views=data.views)
        source = ViewSource(views, hierarchy.assign(train_rec.lats, train_rec.lons), run.seed, dd.rank, dd.world)
        val_true = np.stack([val_rec.lats[val_views.keep], val_rec.lons[val_views.keep]], 1)
        val_feats = lambda m: view_features(m, val_views)  # noqa: E731
    else:
        val_views = None
        if msgpack is not None:
            source = MsgpackSource(msgpack, hierarchy, model.preprocess, store, side, run.seed, data.num_workers, dd.rank, dd.world)
        elif shards is not None:
            source = ShardSource(shards[0], shards[1], hierarchy, model.preprocess, side, run.seed, data.num_workers, dd.rank, dd.world)
        else:
            ds = ImageDataset(train_rec, hierarchy.assign(train_rec.lats, train_rec.lons), model.preprocess, store, side, run.seed)
            source = ImageSource(ds, data.num_workers, run.seed, dd.rank, dd.world)
        _cache: dict[str, Any] = {}

        def val_feats(m):
            f, keep = image_features(m, val_rec, val_store, report=None if "keep" in _cache else skipped)
            _cache["keep"] = keep
            return f

        val_true = None

    # ---- optimization
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    accum = optim.accumulation(dd.world)
    core = model
    if dd.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
    amp_dtype = run.amp_dtype() if device.type == "cuda" else None
    # float16 needs loss scaling (its range underflows small gradients); bfloat16 does not
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    counters: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "best": None, "best_epoch": -1, "bad_epochs": 0, "history": []}
    if resume:
        got = load_state(work_dir, core, opt)
        if got is None:
            say(f"--resume: no training state in {work_dir}; starting from scratch")
        else:
            counters = got
            if scaler is not None and counters.get("scaler"):
                scaler.load_state_dict(counters["scaler"])
            say(f"resuming at epoch {counters['epoch']}, batch {counters['batch']}, step {counters['step']}")
    log(kind="start", config=cfg.to_dict(), world=dd.world, device=str(device), accum=accum,
        effective_batch=optim.micro_batch * accum * dd.world, amp=str(amp_dtype) if amp_dtype else None,
        train=len(lats), val=len(val_rec), cells=hierarchy.num_cells, resumed=resume)

    def validate() -> dict[str, float]:
        core.eval()
        feats = val_feats(core).to(device)
        core.train()
        true = val_true if val_true is not None else np.stack([val_rec.lats[_cache["keep"]], val_rec.lons[_cache["keep"]]], 1)
        pred = predict_points(HierarchicalScorer.for_model(core, hierarchy).to(device), feats)
        return accuracy_report(pred[:, 0], pred[:, 1], true[:, 0], true[:, 1]).as_dict()

    def save_best(metrics: dict[str, float], epoch: int) -> None:
        if dd.main:
            publish_checkpoint(work_dir / BEST, core, hierarchy, extra={"epoch": epoch, "val": metrics}, keep=run.keep_exports)

    def save_state_now() -> None:
        if scaler is not None:
            counters["scaler"] = scaler.state_dict()
        save_state(work_dir, core, opt, counters)

    stop = False
    for epoch in range(counters["epoch"], optim.epochs):
        lr = optim.lr * optim.lr_gamma**epoch
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        nb = source.num_batches(epoch, optim.micro_batch)
        bar = None
        if run.progress and dd.main:
            from tqdm.auto import tqdm

            bar = tqdm(total=nb, initial=counters["batch"], desc=f"epoch {epoch}", unit="batch")
        micro_i = counters["batch"]
        losses: list[float] = []
        opt.zero_grad(set_to_none=True)
        uneven = dd.world > 1 and getattr(source, "uneven", False)
        batches = source.batches(epoch, optim.micro_batch, start=counters["batch"])
        for inputs, labels, cells, from_hidden in (_lockstep(batches, device) if uneven else batches):
            inputs, cells = inputs.to(device, non_blocking=True), cells.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True) if labels is not None else None
            last = (micro_i + 1) % accum == 0 or (not uneven and micro_i + 1 >= nb)
            sync = model.no_sync() if (dd.world > 1 and not last) else contextlib.nullcontext()
            with sync:
                with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                    feats = model(inputs, labels, from_hidden=from_hidden, return_logits=False)
                loss, per_level, accs = geo_loss(core, feats.float(), cells)
                (scaler.scale(loss / accum) if scaler is not None else loss / accum).backward()
            micro_i += 1
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", step=counters["step"])
            if not last:
                continue
            if scaler is not None:
                scaler.unscale_(opt)
            if optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
            if scaler is not None:
                scaler.step(opt)  # skipped when the scaled gradients overflowed
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            counters["step"] += 1
            counters["batch"] = micro_i
            if counters["step"] % run.log_every == 0 or counters["step"] == 1:
                log(kind="step", step=counters["step"], epoch=epoch, batch=micro_i, lr=lr, loss=loss.item(),
                    level_loss=per_level, level_acc=accs, temperatures=_temps(core))
            if run.checkpoint_every and counters["step"] % run.checkpoint_every == 0 and dd.main:
                save_state_now()
            if optim.max_steps and counters["step"] >= optim.max_steps:
                stop = True
                break
        if bar is not None:
            bar.close()
        if stop and dd.main:
            save_state_now()  # as if interrupted here: --resume continues this epoch
        metrics = validate()
        value = float(metrics[run.val_metric])
        improved = _better(run.val_metric, value, counters["best"])
        if improved:
            counters.update(best=value, best_epoch=epoch, bad_epochs=0)
            save_best(metrics, epoch)
        else:
            counters["bad_epochs"] += 1
        if dd.main:
            publish_checkpoint(work_dir / LATEST, core, hierarchy, extra={"epoch": epoch, "val": metrics}, keep=run.keep_exports)
        counters["history"].append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None, **metrics})
        log(kind="epoch", epoch=epoch, lr=lr, train_loss=counters["history"][-1]["train_loss"], val=metrics, improved=improved)
        say(f"epoch {epoch}: train loss {counters['history'][-1]['train_loss'] or float('nan'):.4f}  val {run.val_metric} "
            f"{value:.3f}  (acc 25/200/750/2500 km: {metrics['acc_25km']:.1f} / {metrics['acc_200km']:.1f} / "
            f"{metrics['acc_750km']:.1f} / {metrics['acc_2500km']:.1f}){'  *best' if improved else ''}")
        if stop:
            break
        counters.update(epoch=epoch + 1, batch=0)
        if dd.main:
            save_state_now()
        if counters["bad_epochs"] >= optim.patience:
            say(f"early stopping: no {run.val_metric} gain for {optim.patience} epochs (best epoch {counters['best_epoch']})")
            break
    skipped.merge(source.skipped)
    dd.barrier()

    # ---- the deliverable: best weights + hierarchy + reference index
    if dd.main:
        best, _, _, best_cfg = load_checkpoint(work_dir / BEST, device)
        reference = None
        if run.reference_index and train_rec is not None:
            if val_views is not None:
                feats = view_features(best, views)
                keep = views.keep
            else:
                feats, keep = image_features(best, train_rec, store, report=skipped, progress=run.progress)
            reference = build_reference_index(feats, train_rec.lats[keep], train_rec.lons[keep],
                                              [train_rec.ids[i] for i in keep], hierarchy)
        elif run.reference_index and msgpack is not None:
            reference = _stream_reference(best, msgpack, store, hierarchy, run.reference_max, skipped, run.progress)
        extra = {
            "best_epoch": counters["best_epoch"], "val": best_cfg.get("training", {}).get("val"),
            "steps": counters["step"], "history": counters["history"], "seconds": round(time.time() - t0, 1),
            "train_photos": int(len(lats)), "val_photos": int(len(val_rec)), "skipped": skipped.as_dict(),
            "config": cfg.to_dict(),
        }
        save_checkpoint(output, best, hierarchy, reference, extra=extra, train_counts=training_counts(hierarchy, lats, lons))
        log(kind="done", output=str(output), seconds=extra["seconds"], skipped=skipped.as_dict())
        say(f"wrote {output} (best epoch {counters['best_epoch']}, {extra['seconds']:.0f} s); {skipped.summary()}")
    dd.barrier()
    return output


def _partition_points(partition: str | None, lats: np.ndarray, lons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points whose density defines the cells: MP-16's photos when ``model.geo.partition`` names them."""
    return read_photo_density(partition).sample_points() if partition else (lats, lons)


@torch.no_grad()
def _stream_reference(model: GeoSURGE, dataset, store, hierarchy: Hierarchy, limit: int, report: SkipReport,
                      progress: bool, batch: int = 64):
    """Reference index of the first ``limit`` good records of the shards (centre crops): MP-16's 4.7 M
    photos would make a 7 GB index; a sample is enough for "the nearest training photo"."""
    from ..model.encode import encode_images

    feats, lats, lons, ids, imgs, maps = [], [], [], [], [], []

    def flush():
        if imgs:
            feats.append(encode_images(model, imgs, maps if model.uses_fusion else None, batch_size=batch))
            imgs.clear()
            maps.clear()

    it = ((*rec, shard.stem) for shard in dataset.shards for rec in dataset.samples([shard], report=report))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="reference index", unit="img", total=min(limit, len(dataset.coords)))
    for rid, img, lat, lon, unit in it:
        if model.uses_fusion:
            try:
                maps.append(store.load(rid, img.size, unit=unit))
            except FileNotFoundError:
                report.add("no label map", rid)
                continue
        imgs.append(img)
        ids.append(rid)
        lats.append(lat)
        lons.append(lon)
        if len(imgs) == batch:
            flush()
        if len(ids) >= limit:
            break
    flush()
    if not ids:
        return None
    return build_reference_index(torch.cat(feats), np.asarray(lats), np.asarray(lons), ids, hierarchy)


def _lockstep(batches, device: torch.device):
    """Yield while every process still has a batch: streamed shards differ in size, and a process that
    stopped early would leave the others waiting in a collective forever. Costs one tiny all-reduce per
    micro-batch; the processes with more data drop their tail of the epoch (a different tail each epoch)."""
    flag = torch.ones(1, device=device if dist.get_backend() == "nccl" else "cpu")
    for batch in batches:
        flag.fill_(1)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if flag.item() == 0:
            return
        yield batch
    flag.fill_(0)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)


def _temps(model: GeoSURGE) -> list[float] | None:
    geo = model.geo
    return [round(float(t), 4) for t in geo.temperatures().detach()] if hasattr(geo, "temperatures") else None
