"""Photographer-grouped cross-validation inside ``geosurge train`` (the config's ``cv:`` section).

Every photo is scored once by a model of the config's recipe that never saw its photographer: the photos
are split into ``cv.folds`` folds of whole photographers, and each fold's model trains on the others for
the recipe's fixed number of epochs, on cached views of the frozen backbone part (computed once for all
photos). On these out-of-fold scores the posterior is fitted (``geosurge.eval.posterior_cv``): the shipped
one on every photo, and, to judge it, cross-fitted (fold k with what the other folds fitted). The figures
and how they were obtained go into the checkpoint's ``model.posterior.cv``.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch

from ..eval.cv import grouped_folds
from ..eval.posterior_cv import (CORRECTIONS, OutOfFold, PosteriorFit, cv_figures, evaluate_posterior,
                                 fit_shipped_posterior, oof_ratios)
from ..geo.hierarchy import Hierarchy
from ..model.config import PosteriorConfig
from ..model.encode import view_features
from ..model.geosurge import GeoSURGE
from ..model.posterior import Posterior, training_counts
from ..model.variants import VARIANTS
from ..model.views import ViewSet, load_or_build_views
from .config import TrainConfig
from .data import TrainingData, hierarchy_for, label_stores, read_data
from .processes import Run
from .sources import ViewSource


def cross_validate(cfg: TrainConfig, ctx: Run, command: str) -> dict[str | None, PosteriorConfig]:
    """The posterior of every variant the config trains (key None for a single model), fitted on out-of-fold
    scores of ``cv.folds`` photographer-grouped folds over all the configured photos; ``command`` goes on record."""
    if ctx.processes.world > 1:
        raise ValueError("cv runs in one process (the folds train on cached views); start geosurge train without torchrun")
    data = read_data(cfg, ctx.skipped)
    hierarchy = hierarchy_for(cfg, data, ctx)
    configs = {name: variant_config(cfg, name) for name in (cfg.run.variants or [None])}
    views, rec = _all_views(configs, data, hierarchy, ctx)
    folds = grouped_folds(rec.groups, cfg.cv.folds, cfg.run.seed)
    ctx.say(f"cross-validation: {len(rec)} photos, {len(np.unique(rec.groups))} photographers, "
            f"{cfg.cv.folds} folds of {np.bincount(folds).tolist()} photos")
    out = {}
    for name, c in configs.items():
        oof = out_of_fold(c, rec, folds, hierarchy, views, name or "model", cfg.run.progress)
        out[name] = fit_variant_posterior(c, rec, folds, hierarchy, oof, data, name or "model", ctx, command)
    return out


def variant_config(cfg: TrainConfig, name: str | None) -> TrainConfig:
    """The config with the variant's fusion setting (``None``: the config as it is)."""
    c = copy.deepcopy(cfg)
    if name is not None:
        c.model.fusion.enabled = VARIANTS[name].fusion
    return c


def _all_views(configs: dict, data: TrainingData, hierarchy: Hierarchy, ctx: Run):
    """Cached views of every photo (with label lattices when a variant fuses) and the photos that have them."""
    cfg = next((c for c in configs.values() if c.model.fusion.enabled), next(iter(configs.values())))
    model = GeoSURGE(cfg.model, hierarchy.num_cells)
    store, _ = label_stores(cfg, model, data, ctx)
    d = cfg.data
    views = load_or_build_views(model, data.train_rec, store, d.cache_dir, cfg.run.progress, ctx.skipped, d.views)
    rec = data.train_rec.subset(views.keep)
    return ViewSet(views.hidden, views.labels, np.arange(len(rec))), rec


def out_of_fold(cfg: TrainConfig, rec, folds: np.ndarray, hierarchy: Hierarchy, views: ViewSet, tag: str,
                progress: bool = True) -> OutOfFold:
    """Per-level logits of every photo from the model of the fold that left it out, and each fold's counts."""
    cells = hierarchy.assign(rec.lats, rec.lons)
    logits = [np.zeros((len(rec), n)) for n in hierarchy.num_cells]
    counts, backbone, t0 = [], None, time.time()
    labels = cfg.model.fusion.enabled
    for k in range(int(folds.max()) + 1):
        tr, te = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        if backbone is None:
            backbone = GeoSURGE(cfg.model, hierarchy.num_cells).backbone
        desc = f"cv {tag} fold {k + 1}/{folds.max() + 1}" if progress else None
        model = train_fold(cfg, hierarchy, backbone, subset_views(views, tr, labels), cells[tr], desc)
        with torch.no_grad():
            for lvl, z in enumerate(model.logits(view_features(model, subset_views(views, te, labels)))):
                logits[lvl][te] = z.double().numpy()
        counts.append(training_counts(hierarchy, rec.lats[tr], rec.lons[tr]))
    return OutOfFold(logits, counts, time.time() - t0)


def subset_views(views: ViewSet, rows: np.ndarray, labels: bool) -> ViewSet:
    """The views of ``rows`` (label lattices only for a fusion model)."""
    t = torch.from_numpy(rows)
    return ViewSet(views.hidden[t], views.labels[t] if labels and views.labels is not None else None, np.arange(rows.size))


def train_fold(cfg: TrainConfig, hierarchy: Hierarchy, backbone, views: ViewSet, cells: np.ndarray, desc: str | None = None) -> GeoSURGE:
    """The config's recipe on one fold's photos: its optimizer, learning-rate decay, batch and fixed number of
    epochs (no early stopping), on cached views. A backbone with trainable blocks is copied per fold."""
    optim = cfg.optim
    torch.manual_seed(cfg.run.seed)
    if any(p.requires_grad for p in backbone.parameters()):
        backbone = copy.deepcopy(backbone)
    model = GeoSURGE(cfg.model, hierarchy.num_cells, backbone=backbone)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    source, accum = ViewSource(views, cells, cfg.run.seed), optim.accumulation(1)
    bar = _bar(desc, optim.epochs * source.num_batches(0, optim.micro_batch))
    model.train()
    for epoch in range(optim.epochs):
        for g in opt.param_groups:
            g["lr"] = optim.lr * optim.lr_gamma**epoch
        for i, (hidden, labels, c) in enumerate(source.batches(epoch, optim.micro_batch)):
            loss, _, _ = model.geo.loss(model.encode_hidden(hidden, labels), c)
            (loss / accum).backward()
            if (i + 1) % accum == 0 or i + 1 == source.num_batches(epoch, optim.micro_batch):
                _step(opt, params, optim.grad_clip)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    return model.eval()


def _step(opt: torch.optim.Optimizer, params: list, grad_clip: float | None) -> None:
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)


def _bar(desc: str | None, total: int):
    if desc is None:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch")


def fit_variant_posterior(cfg: TrainConfig, rec, folds: np.ndarray, hierarchy: Hierarchy, oof: OutOfFold, data: TrainingData,
                          tag: str, ctx: Run, command: str) -> PosteriorConfig:
    """The shipped posterior (fitted on every photo's out-of-fold scores) with the cross-fitted figures that
    judge it and how they were obtained."""
    truth = np.stack([rec.lats, rec.lons], 1)
    true_fin = hierarchy.assign(rec.lats, rec.lons)[:, -1]
    post = Posterior(PosteriorConfig(enabled=True), hierarchy, oof.counts[0])
    ratios = {beta: oof_ratios(oof, folds, beta) for beta in CORRECTIONS}
    how = PosteriorFit(cfg.cv.calibration, cfg.cv.fit_prior_weight)
    figures = cv_figures(post, evaluate_posterior(post, ratios, folds, true_fin, truth, rec.groups, how), truth, true_fin, rec.groups)
    record = {"command": command, "data": data.sources, "photos": int(len(rec)),
              "photographers": int(len(np.unique(rec.groups))), "folds": int(folds.max() + 1), "group": cfg.cv.group,
              "fold_photos": np.bincount(folds).tolist(), "epochs": cfg.optim.epochs, "calibration": cfg.cv.calibration,
              "seconds": round(oof.seconds, 1), "figures": figures}
    fitted = fit_shipped_posterior(post, ratios, true_fin, truth, how, record)
    acc = figures["accuracy_pct"]
    ctx.say(f"cv {tag}: CV-chosen decision within 200 / 750 / 2500 km: "
            + " / ".join(f"{acc[r][0]:.1f} [{acc[r][1]:.1f}, {acc[r][2]:.1f}]" for r in ("200", "750", "2500"))
            + f" %; bits per photo {figures['bits_per_photo'][0]:+.3f}; {figures['distinct_answers']} distinct answers "
            f"(the most common for {figures['most_common_answer_pct']:.0f} % of photos); shipped decision {fitted.decision} "
            f"({oof.seconds:.0f} s)")
    ctx.log(kind="cv", variant=tag, figures=figures, decision=fitted.decision, level_weights=fitted.level_weights)
    return fitted
