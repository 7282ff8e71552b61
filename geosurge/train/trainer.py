"""``geosurge train``, top to bottom (paper §IV): data -> cells -> model and label maps -> batches -> fit -> export.

One process or many (``torchrun`` + DistributedDataParallel). With ``cv:`` in the config the command first
cross-validates the recipe by photographer (``geosurge.train.crossval``) and fits the posterior on the
out-of-fold scores; every variant is then trained on all the photos CV judged and exported with that
posterior, so that one command builds the whole checkpoint. Progress bars and a JSON-lines log in the work
directory; resumable state every ``checkpoint_every`` steps and at each epoch end.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..model.config import PosteriorConfig
from ..model.geosurge import GeoSURGE
from ..model.variants import VARIANTS
from .config import TrainConfig
from .crossval import cross_validate, variant_config
from .data import hierarchy_for, label_stores, make_source, read_data
from .export import export
from .loop import Fit
from .processes import command_line, start_run


def train(cfg: TrainConfig, resume: bool = False, command: str | None = None) -> list[Path]:
    """Train every variant the config names (``run.variants``) or the single model; returns checkpoint dirs.
    ``command`` (default: this process's command line) is recorded in each checkpoint's config."""
    out = Path(cfg.run.output)
    work = Path(cfg.run.work_dir or f"{out}.work")
    command = command or command_line()
    posteriors = cross_validate(cfg, start_run(cfg.run.device, work / "cv", False), command) if cfg.cv.enabled else {}
    if not cfg.run.variants:
        return [_train_one(cfg, out, work, resume, posteriors.get(None), command)]
    done = []
    for name in cfg.run.variants:  # names checked when the config was read
        variant = VARIANTS[name]
        done.append(_train_one(variant_config(cfg, name), out / variant.name, work / variant.name, resume, posteriors.get(name), command))
    return done


def _train_one(cfg: TrainConfig, output: Path, work_dir: Path, resume: bool, posterior: PosteriorConfig | None, command: str) -> Path:
    """One model: data -> hierarchy -> model and label maps -> batch source -> fit -> export."""
    ctx = start_run(cfg.run.device, work_dir, resume)
    data = read_data(cfg, ctx.skipped)
    hierarchy = hierarchy_for(cfg, data, ctx)

    torch.manual_seed(cfg.run.seed)
    model = GeoSURGE(cfg.model, hierarchy.num_cells).to(ctx.device)
    store, val_store = label_stores(cfg, model, data, ctx)
    source, validator, train_views = make_source(cfg, model, data, hierarchy, store, val_store, ctx)

    fit = Fit(cfg, model, ctx, source.encode)
    if resume:
        fit.resume()
    fit.log_start(resume, train=len(data.lats), val=len(data.val_rec) if data.val_rec is not None else 0, cells=hierarchy.num_cells)
    fit.run(source, validator, hierarchy)
    ctx.skipped.merge(source.skipped)
    ctx.processes.barrier()

    if ctx.processes.main:
        export(cfg, output, data, hierarchy, store, train_views, fit.counters, ctx, posterior, command)
    ctx.processes.barrier()
    return output

