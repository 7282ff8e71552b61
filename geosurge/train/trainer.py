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
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..data.labels import LabelStore, open_label_store, segment_records
from ..data.records import GeoRecords, SkipReport, read_records
from ..geo.hierarchy import Hierarchy, build_hierarchy
from ..geo.metrics import accuracy_report
from ..geo.prior import read_photo_density
from ..model.checkpoint import load_checkpoint, publish_checkpoint, save_checkpoint
from ..model.encode import build_reference_index, image_features, view_features
from ..model.geosurge import GeoSURGE
from ..model.decode import Decoder
from ..model.posterior import training_counts
from ..model.variants import VARIANTS, training_metadata
from ..model.views import ViewSet, label_side, load_or_build_views
from .config import LOWER_IS_BETTER, DataConfig, TrainConfig
from .sources import BatchSource, ImageDataset, ImageSource, MsgpackSource, ShardSource, ViewSource
from .state import load_state, save_state

LOG = "log.jsonl"
BEST = "best"
LATEST = "latest"  # exported at every epoch end: the Predictor can load it while training runs


# ---------------------------------------------------------------------------------------- helpers
@dataclass
class _Processes:
    """This process's place among the training processes (one, or several under torchrun)."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _init_distributed(device: str | None) -> tuple[_Processes, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    processes = _Processes(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        dev = torch.device(f"cuda:{processes.local}") if world > 1 or device in (None, "cuda") else torch.device(device)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device or "cpu")
    return processes, dev


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
    return new < old if metric in LOWER_IS_BETTER else new > old


# ---------------------------------------------------------------------------------------- entry
def train(cfg: TrainConfig, resume: bool = False) -> list[Path]:
    """Train every variant the config names (``run.variants``) or the single model; returns checkpoint dirs."""
    out = Path(cfg.run.output)
    if not cfg.run.variants:
        return [_train_one(cfg, out, Path(cfg.run.work_dir or f"{out}.work"), resume)]
    done = []
    for name in cfg.run.variants:  # names checked when the config was read
        variant = VARIANTS[name]
        c = copy.deepcopy(cfg)
        c.model.fusion.enabled = variant.fusion
        work = Path(cfg.run.work_dir or f"{out}.work") / variant.name
        done.append(_train_one(c, out / variant.name, work, resume))
    return done


def _train_one(cfg: TrainConfig, output: Path, work_dir: Path, resume: bool) -> Path:
    """One model, top to bottom: data -> hierarchy -> model and label maps -> batch source -> fit -> export."""
    ctx = _start_run(cfg, work_dir, resume)
    data = _read_data(cfg, ctx.skipped)
    hierarchy = _build_hierarchy(cfg, data, ctx)

    torch.manual_seed(cfg.run.seed)
    model = GeoSURGE(cfg.model, hierarchy.num_cells).to(ctx.device)
    store, val_store = _label_stores(cfg, model, data, ctx)
    source, validator, train_views = _make_source(cfg, model, data, hierarchy, store, val_store, ctx)

    fit = _Fit(cfg, model, ctx, source.encode)
    if resume:
        fit.resume()
    fit.log_start(resume, train=len(data.lats), val=len(data.val_rec), cells=hierarchy.num_cells)
    fit.run(source, validator, hierarchy)
    ctx.skipped.merge(source.skipped)
    ctx.processes.barrier()

    if ctx.processes.main:
        _export(cfg, output, data, hierarchy, store, train_views, fit.counters, ctx)
    ctx.processes.barrier()
    return output


# ---------------------------------------------------------------------------------------- steps
@dataclass
class _Run:
    """What every step of one training run shares: processes, device, work directory, log and skip report."""
    processes: _Processes
    device: torch.device
    work_dir: Path
    log: _Logger
    say: Callable[..., None]  # print on the main process, nothing elsewhere
    skipped: SkipReport
    t0: float


@dataclass
class _Data:
    """Training coordinates (and rows, or a streamed dataset) plus the validation rows."""
    lats: np.ndarray
    lons: np.ndarray
    val_rec: GeoRecords | None  # filled in by _read_data
    train_rec: GeoRecords | None = None  # None when training streams shards or msgpack
    msgpack: Any = None
    shards: tuple[list[str], int] | None = None  # (urls, number of photos)


def _start_run(cfg: TrainConfig, work_dir: Path, resume: bool) -> _Run:
    """Join the process group; a fresh (non-resumed) run starts from an empty log and no saved state."""
    t0 = time.time()
    processes, device = _init_distributed(cfg.run.device)
    work_dir.mkdir(parents=True, exist_ok=True)
    if not resume and processes.main:
        for f in (work_dir / LOG, work_dir / "train_state.json", work_dir / "train_state.safetensors"):
            f.unlink(missing_ok=True)
    processes.barrier()
    say = print if processes.main else (lambda *a, **k: None)
    return _Run(processes, device, work_dir, _Logger(work_dir, processes.main), say, SkipReport(), t0)


def _read_data(cfg: TrainConfig, skipped: SkipReport) -> _Data:
    """The training rows from one of three sources (msgpack shards, WebDataset shards, a CSV) and the
    validation rows (their own CSV, or a seeded split of the training CSV)."""
    data = cfg.data
    got = _read_training_rows(data, skipped)
    if data.val_csv:
        got.val_rec, rep = read_records(data.val_csv, data.val_images or data.images)
        skipped.merge(rep)
    else:
        train_rec = got.train_rec
        perm = np.random.default_rng(cfg.run.seed).permutation(len(train_rec))
        n_val = max(1, int(round(data.val_fraction * len(train_rec))))
        got.val_rec, got.train_rec = train_rec.subset(np.sort(perm[:n_val])), train_rec.subset(np.sort(perm[n_val:]))
        got.lats, got.lons = got.train_rec.lats, got.train_rec.lons
    if len(got.lats) == 0 or len(got.val_rec) == 0:
        raise ValueError("no usable training or validation rows (" + skipped.summary() + ")")
    return got


def _read_training_rows(data: DataConfig, skipped: SkipReport) -> _Data:
    """Training coordinates of the configured source; ``val_rec`` is filled in by the caller."""
    if data.msgpack:
        from ..data.msgpack_shards import MsgpackDataset

        if not data.msgpack_meta:
            raise ValueError("data.msgpack needs data.msgpack_meta: the CSV of IMG_ID, LAT, LON (mp16_places365.csv)")
        msgpack, rep = MsgpackDataset.open(data.msgpack, data.msgpack_meta)
        skipped.merge(rep)
        lats, lons = msgpack.coordinates()
        if not data.val_csv:
            raise ValueError("training from msgpack shards needs data.val_csv for validation")
        return _Data(lats, lons, val_rec=None, msgpack=msgpack)
    if data.shards:
        from ..data.shards import read_shard_index

        urls, lats, lons = read_shard_index(data.shards)
        if not data.val_csv:
            raise ValueError("training from shards needs data.val_csv for validation")
        return _Data(lats, lons, val_rec=None, shards=(urls, len(lats)))
    if not data.train_csv:
        raise ValueError("set data.train_csv (image,lat,lon rows) or data.shards in the config")
    train_rec, rep = read_records(data.train_csv, data.images)
    skipped.merge(rep)
    return _Data(train_rec.lats, train_rec.lons, val_rec=None, train_rec=train_rec)


def _build_hierarchy(cfg: TrainConfig, data: _Data, ctx: _Run) -> Hierarchy:
    geo = cfg.model.geo
    hierarchy = build_hierarchy(*_partition_points(geo.partition, data.lats, data.lons), geo.tau_min, geo.tau_maxes)
    if min(hierarchy.num_cells) == 0:
        raise ValueError(f"the hierarchy has an empty level ({hierarchy.num_cells} cells from {len(data.lats)} photos): "
                         f"lower model.geo.tau_min ({geo.tau_min}) or add photos")
    ctx.say(f"hierarchy: {hierarchy.num_cells} cells over {len(hierarchy.levels)} levels from {len(data.lats)} photos")
    if ctx.skipped.total:
        ctx.say(ctx.skipped.summary())
    return hierarchy


def _label_stores(cfg: TrainConfig, model: GeoSURGE, data: _Data, ctx: _Run) -> tuple[Any, Any]:
    """(training, validation) label-map stores of a fusion model, segmenting missing photos when asked;
    (None, None) for an RGB-only model."""
    if not model.uses_fusion:
        return None, None
    if not cfg.data.labels:
        raise ValueError("a fusion model trains on precomputed label maps: set data.labels (see `geosurge segment`)")
    side = label_side(model)
    store = open_label_store(cfg.data.labels, cfg.model.segmenter, side)
    # validation photos' maps: their own store (PNG per photo) keeps MP-16's chunk index out of memory
    val_store = open_label_store(cfg.data.val_labels, cfg.model.segmenter, side) if cfg.data.val_labels else store
    if cfg.data.segment_missing and ctx.processes.main:
        from ..model.segmenters import create_segmenter

        seg = None
        for rec, st in ((data.train_rec, store), (data.val_rec, val_store)):
            # chunk stores are written by `geosurge segment` only
            if rec is not None and isinstance(st, LabelStore) and any(not st.has(i) for i in rec.ids):
                seg = seg or create_segmenter(cfg.model.segmenter)
                r = segment_records(rec, seg, st, progress=cfg.run.progress)
                ctx.say(r.summary())
    ctx.processes.barrier()
    return store, val_store


def _make_source(cfg: TrainConfig, model: GeoSURGE, data: _Data, hierarchy: Hierarchy, store, val_store,
                 ctx: _Run) -> tuple[BatchSource, _Validator, ViewSet | None]:
    """The batch source of the configured data and the matching validator; the cached training views
    (``None`` unless ``data.view_cache`` applies: CSV training only)."""
    run, processes, side = cfg.run, ctx.processes, label_side(model)
    if cfg.data.view_cache and data.shards is None and data.msgpack is None:
        views, val_views = _cached_views(cfg, model, data, store, val_store, ctx)
        cells = hierarchy.assign(data.train_rec.lats, data.train_rec.lons)
        source = ViewSource(views, cells, run.seed, processes.rank, processes.world)
        return source, _Validator(hierarchy, ctx.device, data.val_rec, val_views=val_views), views
    if data.msgpack is not None:
        source = MsgpackSource(data.msgpack, hierarchy, model.preprocess, store, side, run.seed, cfg.data.num_workers,
                               processes.rank, processes.world)
    elif data.shards is not None:
        source = ShardSource(data.shards[0], data.shards[1], hierarchy, model.preprocess, side, run.seed,
                             cfg.data.num_workers, processes.rank, processes.world)
    else:
        rec = data.train_rec
        ds = ImageDataset(rec, hierarchy.assign(rec.lats, rec.lons), model.preprocess, store, side, run.seed)
        source = ImageSource(ds, cfg.data.num_workers, run.seed, processes.rank, processes.world)
    return source, _Validator(hierarchy, ctx.device, data.val_rec, val_store=val_store, skipped=ctx.skipped), None


def _cached_views(cfg: TrainConfig, model: GeoSURGE, data: _Data, store, val_store, ctx: _Run) -> tuple[ViewSet, ViewSet]:
    """(training, validation) view caches: the main process builds them, the others then read them."""
    d = cfg.data
    if ctx.processes.main:
        views = load_or_build_views(model, data.train_rec, store, d.cache_dir, cfg.run.progress, ctx.skipped, d.views)
        val_views = load_or_build_views(model, data.val_rec, val_store, d.cache_dir, cfg.run.progress, ctx.skipped, d.views)
    ctx.processes.barrier()
    if not ctx.processes.main:
        views = load_or_build_views(model, data.train_rec, store, d.cache_dir, False, views=d.views)
        val_views = load_or_build_views(model, data.val_rec, val_store, d.cache_dir, False, views=d.views)
    return views, val_views


class _Validator:
    """Accuracy of the model on the validation photos: ten-crop features of cached views, or centre crops
    of the images (whose unreadable photos are reported once, at the first validation)."""

    def __init__(self, hierarchy: Hierarchy, device: torch.device, val_rec: GeoRecords, val_views: ViewSet | None = None,
                 val_store=None, skipped: SkipReport | None = None):
        self.hierarchy, self.device, self.val_rec = hierarchy, device, val_rec
        self.val_views, self.val_store, self.skipped = val_views, val_store, skipped
        self.reported = False

    def __call__(self, model: GeoSURGE) -> dict[str, float]:
        model.eval()
        feats, keep = self._features(model)
        feats = feats.to(self.device)
        model.train()
        true = np.stack([self.val_rec.lats[keep], self.val_rec.lons[keep]], 1)
        pred = Decoder.for_model(model, self.hierarchy).to(self.device)(feats).latlon
        return accuracy_report(pred[:, 0], pred[:, 1], true[:, 0], true[:, 1]).as_dict()

    def _features(self, model: GeoSURGE) -> tuple[torch.Tensor, np.ndarray]:
        if self.val_views is not None:
            return view_features(model, self.val_views), self.val_views.keep
        feats, keep = image_features(model, self.val_rec, self.val_store, report=None if self.reported else self.skipped)
        self.reported = True
        return feats, keep


class _Encoder(torch.nn.Module):
    """The batch source's encoding step (``GeoSURGE.encode`` or ``encode_hidden``) as a module's forward: DDP
    synchronizes the gradients of calls through its own forward only."""

    def __init__(self, model: GeoSURGE, encode):
        super().__init__()
        self.model, self.encode = model, encode

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.encode(self.model, inputs, labels)


class _Fit:
    """Optimizer, precision, DDP wrapper and the counters that make a run resumable; ``run`` is the epoch loop."""

    def __init__(self, cfg: TrainConfig, model: GeoSURGE, ctx: _Run, encode):
        self.cfg, self.optim, self.ctx, self.model = cfg, cfg.optim, ctx, model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=self.optim.lr, weight_decay=self.optim.weight_decay)
        self.accum = self.optim.accumulation(ctx.processes.world)
        self.encoder = _Encoder(model, encode)
        if ctx.processes.world > 1:
            dev = ctx.device
            device_ids = [dev.index] if dev.type == "cuda" else None
            self.encoder = torch.nn.parallel.DistributedDataParallel(self.encoder, device_ids=device_ids)
        self.amp_dtype = cfg.run.amp_dtype() if ctx.device.type == "cuda" else None
        # float16 needs loss scaling (its range underflows small gradients); bfloat16 does not
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.counters: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "best": None, "best_epoch": -1,
                                         "bad_epochs": 0, "history": []}

    def resume(self) -> None:
        got = load_state(self.ctx.work_dir, self.model, self.opt)
        if got is None:
            self.ctx.say(f"--resume: no training state in {self.ctx.work_dir}; starting from scratch")
            return
        self.counters = got
        if self.scaler is not None and got.get("scaler"):
            self.scaler.load_state_dict(got["scaler"])
        self.ctx.say(f"resuming at epoch {got['epoch']}, batch {got['batch']}, step {got['step']}")

    def log_start(self, resumed: bool, **sizes: Any) -> None:
        ctx, amp = self.ctx, self.amp_dtype
        ctx.log(kind="start", config=self.cfg.to_dict(), world=ctx.processes.world, device=str(ctx.device), accum=self.accum,
                effective_batch=self.optim.micro_batch * self.accum * ctx.processes.world, amp=str(amp) if amp else None,
                **sizes, resumed=resumed)

    def save_state(self) -> None:
        if self.scaler is not None:
            self.counters["scaler"] = self.scaler.state_dict()
        save_state(self.ctx.work_dir, self.model, self.opt, self.counters)

    def run(self, source, validator: _Validator, hierarchy: Hierarchy) -> None:
        """Epochs until ``optim.epochs``, ``optim.max_steps`` or ``optim.patience`` epochs without a gain."""
        c, processes = self.counters, self.ctx.processes
        for epoch in range(c["epoch"], self.optim.epochs):
            lr = self.optim.lr * self.optim.lr_gamma**epoch
            losses, stop = self._train_epoch(source, epoch, lr)
            if stop and processes.main:
                self.save_state()  # as if interrupted here: --resume continues this epoch
            self._end_epoch(epoch, lr, losses, validator(self.model), hierarchy)
            if stop:
                break
            c.update(epoch=epoch + 1, batch=0)
            if processes.main:
                self.save_state()
            if c["bad_epochs"] >= self.optim.patience:
                self.ctx.say(f"early stopping: no {self.cfg.run.val_metric} gain for {self.optim.patience} epochs "
                             f"(best epoch {c['best_epoch']})")
                break

    def _train_epoch(self, source, epoch: int, lr: float) -> tuple[list[float], bool]:
        """Micro-batches from ``counters["batch"]`` on; returns (their losses, whether max_steps was reached)."""
        c, processes, device, optim = self.counters, self.ctx.processes, self.ctx.device, self.optim
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.encoder.train()
        nb = source.num_batches(epoch, optim.micro_batch)
        bar = None
        if self.cfg.run.progress and processes.main:
            from tqdm.auto import tqdm

            bar = tqdm(total=nb, initial=c["batch"], desc=f"epoch {epoch}", unit="batch")
        micro_i, losses, stop = c["batch"], [], False
        self.opt.zero_grad(set_to_none=True)
        uneven = processes.world > 1 and source.uneven
        batches = source.batches(epoch, optim.micro_batch, start=c["batch"])
        for inputs, labels, cells in (_lockstep(batches, device) if uneven else batches):
            last = (micro_i + 1) % self.accum == 0 or (not uneven and micro_i + 1 >= nb)
            loss, per_level, accs = self._backward(inputs, labels, cells, sync=last)
            micro_i += 1
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", step=c["step"])
            if not last:
                continue
            self._step()
            c["batch"] = micro_i
            if c["step"] % self.cfg.run.log_every == 0 or c["step"] == 1:
                self.ctx.log(kind="step", step=c["step"], epoch=epoch, batch=micro_i, lr=lr, loss=loss.item(),
                             level_loss=per_level, level_acc=accs, temperatures=_temps(self.model))
            if self.cfg.run.checkpoint_every and c["step"] % self.cfg.run.checkpoint_every == 0 and processes.main:
                self.save_state()
            if optim.max_steps and c["step"] >= optim.max_steps:
                stop = True
                break
        if bar is not None:
            bar.close()
        return losses, stop

    def _backward(self, inputs, labels, cells, sync: bool):
        """Forward and backward of one micro-batch; gradients are all-reduced only on the last of an accumulation."""
        device, amp = self.ctx.device, self.amp_dtype
        inputs, cells = inputs.to(device, non_blocking=True), cells.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True) if labels is not None else None
        no_sync = self.encoder.no_sync() if (self.ctx.processes.world > 1 and not sync) else contextlib.nullcontext()
        with no_sync:
            with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                feats = self.encoder(inputs, labels)
            loss, per_level, accs = self.model.geo.loss(feats.float(), cells)
            (self.scaler.scale(loss / self.accum) if self.scaler is not None else loss / self.accum).backward()
        return loss, per_level, accs

    def _step(self) -> None:
        """One optimizer step (unscale, clip, step) on the accumulated gradients."""
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        if self.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.optim.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)  # skipped when the scaled gradients overflowed
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.counters["step"] += 1

    def _end_epoch(self, epoch: int, lr: float, losses: list[float], metrics: dict[str, float], hierarchy: Hierarchy) -> None:
        """Track the best epoch, publish the best and latest exports, log and print the epoch."""
        c, ctx, run = self.counters, self.ctx, self.cfg.run
        value = float(metrics[run.val_metric])
        improved = _better(run.val_metric, value, c["best"])
        if improved:
            c.update(best=value, best_epoch=epoch, bad_epochs=0)
            if ctx.processes.main:
                publish_checkpoint(ctx.work_dir / BEST, self.model, hierarchy, extra={"epoch": epoch, "val": metrics},
                                   keep=run.keep_exports)
        else:
            c["bad_epochs"] += 1
        if ctx.processes.main:
            publish_checkpoint(ctx.work_dir / LATEST, self.model, hierarchy, extra={"epoch": epoch, "val": metrics},
                               keep=run.keep_exports)
        c["history"].append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None, **metrics})
        train_loss = c["history"][-1]["train_loss"]
        ctx.log(kind="epoch", epoch=epoch, lr=lr, train_loss=train_loss, val=metrics, improved=improved)
        ctx.say(f"epoch {epoch}: train loss {train_loss or float('nan'):.4f}  val {run.val_metric} "
                f"{value:.3f}  (acc 25/200/750/2500 km: {metrics['acc_25km']:.1f} / {metrics['acc_200km']:.1f} / "
                f"{metrics['acc_750km']:.1f} / {metrics['acc_2500km']:.1f}){'  *best' if improved else ''}")


def _export(cfg: TrainConfig, output: Path, data: _Data, hierarchy: Hierarchy, store, train_views: ViewSet | None,
            counters: dict[str, Any], ctx: _Run) -> None:
    """The deliverable (main process): the best epoch's weights + hierarchy + reference index + training metadata."""
    run, skipped = cfg.run, ctx.skipped
    best, _, _, best_cfg = load_checkpoint(ctx.work_dir / BEST, ctx.device)
    reference = None
    if run.reference_index and data.train_rec is not None:
        rec = data.train_rec
        if train_views is not None:
            feats, keep = view_features(best, train_views), train_views.keep
        else:
            feats, keep = image_features(best, rec, store, report=skipped, progress=run.progress)
        reference = build_reference_index(feats, rec.lats[keep], rec.lons[keep], [rec.ids[i] for i in keep], hierarchy)
    elif run.reference_index and data.msgpack is not None:
        reference = _stream_reference(best, data.msgpack, store, hierarchy, run.reference_max, skipped, run.progress)
    extra = {
        "best_epoch": counters["best_epoch"], "val": best_cfg.get("training", {}).get("val"),
        "steps": counters["step"], "history": counters["history"], "seconds": round(time.time() - ctx.t0, 1),
        "train_photos": int(len(data.lats)), "val_photos": int(len(data.val_rec)), "skipped": skipped.as_dict(),
        "config": cfg.to_dict(), **training_metadata(data.train_rec.root if data.train_rec is not None else None),
    }
    counts = training_counts(hierarchy, data.lats, data.lons)
    save_checkpoint(output, best, hierarchy, reference, extra=extra, train_counts=counts)
    ctx.log(kind="done", output=str(output), seconds=extra["seconds"], skipped=skipped.as_dict())
    ctx.say(f"wrote {output} (best epoch {counters['best_epoch']}, {extra['seconds']:.0f} s); {skipped.summary()}")


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
    temps = model.geo.temperatures()
    return [round(float(t), 4) for t in temps.detach()] if temps is not None else None
