"""Data assembly of a training run: the photos (CSV lists, a folder of geotagged photos, OSV-5M on the Hub,
WebDataset or MP-16 msgpack shards), the validation photos, the cell hierarchy, the label maps and the batch
source that feeds the loop."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.labels import LabelStore, open_label_store, segment_records
from ..data.records import GeoRecords, SkipReport, concat_records, read_records
from ..geo.hierarchy import Hierarchy, build_hierarchy
from ..geo.prior import read_photo_density
from ..model.geosurge import GeoSURGE
from ..model.views import ViewSet, label_side, load_or_build_views
from .config import DataConfig, TrainConfig
from .processes import Run
from .sources import BatchSource, ImageDataset, ImageSource, MsgpackSource, ShardSource, ViewSource
from .validate import Validator


@dataclass
class TrainingData:
    """Training coordinates (and rows, or a streamed dataset) plus the validation rows (none under cv)."""

    lats: np.ndarray
    lons: np.ndarray
    val_rec: GeoRecords | None = None
    train_rec: GeoRecords | None = None  # None when training streams shards or msgpack
    msgpack: Any = None
    shards: tuple[list[str], int] | None = None  # (urls, number of photos)
    sources: list[dict[str, Any]] = field(default_factory=list)  # where the photos came from, with counts (the record)


def read_data(cfg: TrainConfig, skipped: SkipReport) -> TrainingData:
    """The training rows of the configured source and the validation rows: their own CSV, a seeded split of the
    training rows, or none under cross-validation (the final fit then trains on every photo CV judged)."""
    data = cfg.data
    got = _read_training_rows(cfg, skipped)
    if data.val_csv:
        got.val_rec, rep = read_records(data.val_csv, data.val_images or data.images)
        skipped.merge(rep)
    elif not cfg.cv.enabled:
        perm = np.random.default_rng(cfg.run.seed).permutation(len(got.train_rec))
        n_val = max(1, int(round(data.val_fraction * len(got.train_rec))))
        got.val_rec, got.train_rec = got.train_rec.subset(np.sort(perm[:n_val])), got.train_rec.subset(np.sort(perm[n_val:]))
        got.lats, got.lons = got.train_rec.lats, got.train_rec.lons
    if len(got.lats) == 0 or (got.val_rec is not None and len(got.val_rec) == 0):
        raise ValueError("no usable training or validation rows (" + skipped.summary() + ")")
    return got


def _read_training_rows(cfg: TrainConfig, skipped: SkipReport) -> TrainingData:
    """Training coordinates of the configured source; the validation rows are the caller's."""
    data = cfg.data
    if data.msgpack:
        from ..data.msgpack_shards import MsgpackDataset

        if not data.msgpack_meta:
            raise ValueError("data.msgpack needs data.msgpack_meta: the CSV of IMG_ID, LAT, LON (mp16_places365.csv)")
        if not data.val_csv:
            raise ValueError("training from msgpack shards needs data.val_csv for validation")
        msgpack, rep = MsgpackDataset.open(data.msgpack, data.msgpack_meta)
        skipped.merge(rep)
        lats, lons = msgpack.coordinates()
        return TrainingData(lats, lons, msgpack=msgpack, sources=[{"msgpack": data.msgpack, "photos": int(len(lats))}])
    if data.shards:
        from ..data.shards import read_shard_index

        if not data.val_csv:
            raise ValueError("training from shards needs data.val_csv for validation")
        urls, lats, lons = read_shard_index(data.shards)
        return TrainingData(lats, lons, shards=(urls, len(lats)), sources=[{"shards": data.shards, "photos": int(len(lats))}])
    rec, sources = read_photo_list(data, cfg.cv.group if cfg.cv.enabled else None, skipped)
    return TrainingData(rec.lats, rec.lons, train_rec=rec, sources=sources)


def read_photo_list(data: DataConfig, group: str | None, skipped: SkipReport) -> tuple[GeoRecords, list[dict[str, Any]]]:
    """The photos of ``data.train_csv`` (one list, in order), ``data.photos`` or ``data.hub``, with their
    photographers when ``group`` names the CSV column (a photo folder always knows them); and where they came
    from, with the number of photos each source gave."""
    if data.photos:
        from ..data.photo_folder import read_photo_folder

        rec, rep = read_photo_folder(data.photos)
        sources = [{"photos_folder": data.photos, "photos": len(rec), "skipped": rep.total}]
    elif data.hub:
        from ..data.osv5m import read_osv5m

        h = data.hub
        rec, rep = read_osv5m(h.repo, h.split, h.shards, h.revision, f"{data.cache_dir}/osv5m", group)
        sources = [{"hub": h.repo, "split": h.split, "shards": h.shards, "revision": rec.root.parent.name, "photos": len(rec)}]
    elif data.csvs:
        parts = [read_records(path, data.images, group=group) for path in data.csvs]
        rec, rep = concat_records([p for p, _ in parts]), SkipReport()
        for _, r in parts:
            rep.merge(r)
        sources = [{"csv": path, "photos": len(p)} for path, (p, _) in zip(data.csvs, parts)]
    else:
        raise ValueError("set the training photos: data.train_csv (image,lat,lon rows), data.photos (a folder of geotagged "
                         "photos), data.hub (OSV-5M on the Hub), data.shards or data.msgpack")
    skipped.merge(rep)
    return rec, sources


def hierarchy_for(cfg: TrainConfig, data: TrainingData, ctx: Run) -> Hierarchy:
    """The cells: from the photo-density file ``model.geo.partition`` names (MP-16), else from the training photos."""
    geo = cfg.model.geo
    points = read_photo_density(geo.partition).sample_points() if geo.partition else (data.lats, data.lons)
    hierarchy = build_hierarchy(*points, geo.tau_min, geo.tau_maxes)
    if min(hierarchy.num_cells) == 0:
        raise ValueError(f"the hierarchy has an empty level ({hierarchy.num_cells} cells from {len(data.lats)} photos): "
                         f"lower model.geo.tau_min ({geo.tau_min}) or add photos")
    ctx.say(f"hierarchy: {hierarchy.num_cells} cells over {len(hierarchy.levels)} levels from {len(data.lats)} photos")
    if ctx.skipped.total:
        ctx.say(ctx.skipped.summary())
    return hierarchy


def label_stores(cfg: TrainConfig, model: GeoSURGE, data: TrainingData, ctx: Run) -> tuple[Any, Any]:
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


def make_source(cfg: TrainConfig, model: GeoSURGE, data: TrainingData, hierarchy: Hierarchy, store, val_store,
                ctx: Run) -> tuple[BatchSource, Validator | None, ViewSet | None]:
    """The batch source of the configured data and the matching validator; the cached training views
    (``None`` unless ``data.view_cache`` applies: CSV training only)."""
    run, processes, side = cfg.run, ctx.processes, label_side(model)
    if cfg.data.view_cache and data.shards is None and data.msgpack is None:
        views, val_views = cached_views(cfg, model, data, store, val_store, ctx)
        cells = hierarchy.assign(data.train_rec.lats, data.train_rec.lons)
        source = ViewSource(views, cells, run.seed, processes.rank, processes.world)
        validator = Validator(hierarchy, ctx.device, data.val_rec, val_views=val_views) if val_views is not None else None
        return source, validator, views
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
    validator = Validator(hierarchy, ctx.device, data.val_rec, val_store=val_store, skipped=ctx.skipped) if data.val_rec is not None else None
    return source, validator, None


def cached_views(cfg: TrainConfig, model: GeoSURGE, data: TrainingData, store, val_store, ctx: Run) -> tuple[ViewSet, ViewSet | None]:
    """(training, validation or None) view caches: the main process builds them, the others then read them."""
    d, main = cfg.data, ctx.processes.main
    if main:
        views = load_or_build_views(model, data.train_rec, store, d.cache_dir, cfg.run.progress, ctx.skipped, d.views)
        val_views = _val_views(cfg, model, data, val_store, ctx.skipped)
    ctx.processes.barrier()
    if not main:
        views = load_or_build_views(model, data.train_rec, store, d.cache_dir, False, views=d.views)
        val_views = _val_views(cfg, model, data, val_store, None)
    return views, val_views


def _val_views(cfg: TrainConfig, model: GeoSURGE, data: TrainingData, val_store, skipped: SkipReport | None) -> ViewSet | None:
    if data.val_rec is None:
        return None
    progress = cfg.run.progress and skipped is not None
    return load_or_build_views(model, data.val_rec, val_store, cfg.data.cache_dir, progress, skipped, cfg.data.views)



