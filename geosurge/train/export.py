"""Export of a training run: the best epoch's weights + hierarchy + reference index + training counts and
metadata (and the posterior cross-validation fitted) as the checkpoint directory the Predictor loads."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..data.records import SkipReport
from ..geo.hierarchy import Hierarchy
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.config import PosteriorConfig
from ..model.encode import build_reference_index, image_features, view_features
from ..model.geosurge import GeoSURGE
from ..model.posterior import training_counts
from ..model.variants import training_metadata
from ..model.views import ViewSet
from .config import TrainConfig
from .data import TrainingData
from .loop import BEST
from .processes import Run
from .state import Counters


def export(cfg: TrainConfig, output: Path, data: TrainingData, hierarchy: Hierarchy, store, train_views: ViewSet | None,
           counters: Counters, ctx: Run, posterior: PosteriorConfig | None = None, command: str = "") -> None:
    """The deliverable (main process): the best epoch's weights + hierarchy + reference index + training metadata
    (with the ``command`` that trained it), and ``posterior`` (fitted by cross-validation) in its model config."""
    run, skipped = cfg.run, ctx.skipped
    best, _, _, best_cfg = load_checkpoint(ctx.work_dir / BEST, ctx.device)
    if posterior is not None:
        best.cfg.posterior = posterior
    reference = None
    if run.reference_index and data.train_rec is not None:
        rec = data.train_rec
        if train_views is not None:
            feats, keep = view_features(best, train_views), train_views.keep
        else:
            feats, keep = image_features(best, rec, store, report=skipped, progress=run.progress)
        reference = build_reference_index(feats, rec.lats[keep], rec.lons[keep], [rec.ids[i] for i in keep], hierarchy)
    elif run.reference_index and data.msgpack is not None:
        reference = stream_reference(best, data.msgpack, store, hierarchy, run.reference_max, skipped, run.progress)
    extra = {
        "command": command, "best_epoch": counters.best_epoch, "val": best_cfg.get("training", {}).get("val"),
        "steps": counters.step, "history": counters.history, "seconds": round(time.time() - ctx.t0, 1),
        "train_photos": int(len(data.lats)), "val_photos": int(len(data.val_rec)) if data.val_rec is not None else 0,
        "skipped": skipped.as_dict(), "config": cfg.to_dict(),
        **training_metadata(data.train_rec.root if data.train_rec is not None else None),
    }
    counts = training_counts(hierarchy, data.lats, data.lons)
    save_checkpoint(output, best, hierarchy, reference, extra=extra, train_counts=counts)
    ctx.log(kind="done", output=str(output), seconds=extra["seconds"], skipped=skipped.as_dict())
    ctx.say(f"wrote {output} (best epoch {counters.best_epoch}, {extra['seconds']:.0f} s); {skipped.summary()}")



@torch.no_grad()
def stream_reference(model: GeoSURGE, dataset, store, hierarchy: Hierarchy, limit: int, report: SkipReport,
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
