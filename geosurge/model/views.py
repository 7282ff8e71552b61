"""Cached frozen-backbone outputs of ten-crop views: training on small data at a fraction of the cost.

With a frozen backbone bottom, the expensive part of every forward pass is the same each epoch. For
each image we store the frozen part's output for its ten crops (the exact crops of ten-crop
evaluation, through the one :class:`~geosurge.data.Preprocess` path) and the label map resampled to the
fusion tokenizer's lattice. Training then draws one view per image per epoch and runs only the
trainable top, fusion and heads; validation and evaluation average the views, which is ten-crop
evaluation (:func:`geosurge.model.encode.view_features`).

What each name of views means is defined here once (:data:`VIEWS`, :func:`crop_views`), for the cached
training views and for encoding photos at inference alike, so a checkpoint is used on the crops it was trained
and cross-validated on.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ..data.examples import example_batches
from ..data.labels import LabelStore
from ..data.records import GeoRecords, SkipReport
from ..data.transforms import Preprocess, resample_labels
from ..files import atomic_write
from .geosurge import GeoSURGE

#: What a photo can be encoded from, cached for training and averaged at inference, with its number of
#: crops: ``center``, the centre crop alone (the cheapest answer); ``ten``, the ten-crop protocol (four
#: corners and centre, plus mirrors); ``five``, the unmirrored five, half the cost of ten (the frozen
#: backbone part dominates on CPUs). The n > 1 sets are the first n of :class:`~geosurge.data.Preprocess`'s
#: ten crops.
VIEW_SETS = {"center": 1, "ten": 10, "five": 5}
VIEWS = tuple(VIEW_SETS)


def check_views(views: str, allowed: tuple[str, ...] = VIEWS) -> str:
    """``views`` when it is one of ``allowed``, else a ValueError naming them."""
    if views not in allowed:
        raise ValueError(f"views must be one of {', '.join(map(repr, allowed))}, not {views!r}")
    return views


def crop_views(preprocess: Preprocess, image: Image.Image, labels: np.ndarray | None,
               views: str, pixels: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Pixels (n, 3, S, S) and label crops (n, S, S) or None of one image's ``views``: the centre crop, or
    the first n of the ten crops. ``pixels=False``: the label crops alone (pixels None)."""
    if check_views(views) == "center":
        return preprocess(image, labels, crops="center", pixels=pixels)
    n = VIEW_SETS[views]
    x, y = preprocess(image, labels, crops="ten", pixels=pixels)
    return (x[:n] if x is not None else None), (y[:n] if y is not None else None)


@dataclass
class ViewSet:
    hidden: torch.Tensor  # (n, V, ...) float16 frozen-backbone outputs
    labels: torch.Tensor | None  # (n, V, side, side) uint8 label lattice, or None without fusion
    keep: np.ndarray  # (n,) row of each entry in the records (unreadable images are left out)

    def __len__(self) -> int:
        return int(self.keep.size)


def label_side(model: GeoSURGE) -> int | None:
    """Side of the label lattice the fusion tokenizer samples (None without fusion)."""
    if model.fusion is None:
        return None
    return model.fusion.tokenizer.label_side


def _key(**parts) -> str:
    return hashlib.sha256(json.dumps({**parts, "v": 2}, sort_keys=True).encode()).hexdigest()[:16]


def _hidden_key(model: GeoSURGE, records: GeoRecords, views: str) -> str:
    return _key(frozen=model.frozen_signature(), root=str(records.root), ids=records.ids, views=views)


def _labels_key(records: GeoRecords, side: int, labels_dir: str, preprocess: Preprocess, views: str) -> str:
    # The whole preprocessing, not hand-picked fields: a crop-geometry field added later changes the key.
    return _key(side=side, labels=labels_dir, preprocess=asdict(preprocess), root=str(records.root), ids=records.ids, views=views)


@torch.no_grad()
def build_views(
    model: GeoSURGE,
    records: GeoRecords,
    store: LabelStore | None,
    views: str = "ten",
    hidden: bool = True,
    batch_images: int = 8,
    progress: bool = True,
    report: SkipReport | None = None,
    rows: np.ndarray | None = None,
) -> ViewSet:
    """Frozen-part outputs (``hidden``) and/or label lattices of the crops of every readable image.

    ``rows`` restricts the work to those records (e.g. the images a cached hidden set kept).
    """
    nv = VIEW_SETS[check_views(views)]
    side = label_side(model)
    if side is not None and store is None:
        raise ValueError("a fusion model needs label maps: set data.labels (see `geosurge segment`)")
    report = report if report is not None else SkipReport()
    device = next(model.parameters()).device
    bb = model.backbone
    was_training = bb.training
    bb.eval()
    out_h, out_l, keep = [], [], []
    desc = (f"caching {views}-crop views" if hidden else "cropping label maps") if progress else None
    for batch in example_batches(records, store if side is not None else None, batch_images, report, rows, desc):
        px, lb = [], []
        for img, lab in zip(batch.images, batch.label_maps or [None] * len(batch.images)):
            x, y = crop_views(bb.preprocess, img, lab, views)
            px.append(x)
            if y is not None:
                lb.append(resample_labels(y, side).to(torch.uint8))
        keep.extend(batch.rows)
        if hidden:
            h = bb.forward_frozen(torch.cat(px).to(device)).half().cpu()
            out_h.append(h.view(len(px), nv, *h.shape[1:]))
        if lb:
            out_l.append(torch.stack(lb))
    bb.train(was_training)
    if not keep:
        n = len(records) if rows is None else len(rows)
        raise ValueError(f"no readable images among {n} rows ({report.summary('images')})")
    return ViewSet(torch.cat(out_h) if out_h else None, torch.cat(out_l) if out_l else None, np.asarray(keep, dtype=np.int64))


def load_or_build_views(
    model: GeoSURGE, records: GeoRecords, store: LabelStore | None, cache_dir: str | Path, progress: bool = True,
    report: SkipReport | None = None, views: str = "ten",
) -> ViewSet:
    """Views from ``cache_dir`` when cached before, otherwise built and cached.

    The frozen outputs and the label lattices are cached separately: a fusion model and an RGB-only
    model with the same backbone share the expensive part.
    """
    cache_dir = Path(cache_dir)
    side = label_side(model)
    hpath = cache_dir / f"views-{_hidden_key(model, records, views)}.safetensors"
    lpath = None
    if side is not None:
        lpath = cache_dir / f"labels-{_labels_key(records, side, str(store.root), model.preprocess, views)}.safetensors"
    local = SkipReport()
    if hpath.is_file():
        t = load_file(str(hpath))
        hidden, keep = t["hidden"], t["keep"].numpy()
        meta = hpath.with_suffix(".json")
        if meta.is_file():
            local.merge(SkipReport.from_dict(json.loads(meta.read_text())))
        labels = None
        if lpath is not None:
            if lpath.is_file():
                t = load_file(str(lpath))
                labels, lkeep = t["labels"], t["keep"].numpy()
            else:
                got = build_views(model, records, store, views, hidden=False, progress=progress, report=local, rows=keep)
                labels, lkeep = got.labels, got.keep
                cache_dir.mkdir(parents=True, exist_ok=True)
                atomic_write(lpath, lambda p: save_file({"labels": labels.contiguous(), "keep": torch.from_numpy(lkeep)}, p))
            if not np.array_equal(lkeep, keep):  # some label maps are missing: keep the images that have both
                both = np.intersect1d(keep, lkeep)
                hidden = hidden[torch.from_numpy(np.searchsorted(keep, both))]
                labels = labels[torch.from_numpy(np.searchsorted(lkeep, both))]
                keep = both
        vs = ViewSet(hidden, labels, keep)
    else:
        vs = build_views(model, records, store, views, progress=progress, report=local)
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(hpath.with_suffix(".json"), lambda p: Path(p).write_text(json.dumps(local.as_dict())))
        atomic_write(hpath, lambda p: save_file({"hidden": vs.hidden.contiguous(), "keep": torch.from_numpy(vs.keep)}, p))
        if lpath is not None:
            atomic_write(lpath, lambda p: save_file({"labels": vs.labels.contiguous(), "keep": torch.from_numpy(vs.keep)}, p))
    if report is not None:
        report.merge(local)
    return vs
