"""Batch feature extraction shared by the Predictor, training, reference indexing and evaluation."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.examples import example_batches
from ..data.records import GeoRecords, SkipReport
from ..geo.hierarchy import Hierarchy
from .geosurge import GeoSURGE
from .hierarchical import ReferenceIndex
from .views import ViewSet, check_views, crop_views


#: label maps given outright, or a call that returns them once ready (a segmenter running beside the backbone)
LabelMaps = Sequence[np.ndarray | None] | Callable[[], Sequence[np.ndarray]] | None


@torch.no_grad()
def encode_images_multi(
    models: Sequence[GeoSURGE],
    images: Sequence[Image.Image],
    label_maps: LabelMaps = None,
    views: str = "center",
    batch_size: int = 16,
    progress: bool = False,
) -> list[torch.Tensor]:
    """:func:`encode_images` for several models at once (e.g. the fusion and RGB-only variants).

    Models whose frozen backbone part is the same (equal :meth:`GeoSURGE.frozen_signature`) share one
    preprocessing pass and one frozen forward; only their trainable parts run separately. ``label_maps``
    may be a call returning them: it is made after the first frozen forward, so a segmenter that is still
    working meanwhile (in another thread) overlaps the backbone instead of preceding it.
    """
    check_views(views)
    maps = _LateMaps(label_maps, len(images), any(m.uses_fusion for m in models))
    signatures: dict[str, list[int]] = {}  # frozen signature -> member indices, in first-seen order
    for i, m in enumerate(models):
        signatures.setdefault(m.frozen_signature(), []).append(i)
    out: list[list[torch.Tensor]] = [[] for _ in models]
    starts = range(0, len(images), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="encoding", unit="batch")
    for s in starts:
        batch = images[s : s + batch_size]
        for members in signatures.values():
            lead = models[members[0]]
            device = next(lead.parameters()).device
            crops = [crop_views(lead.preprocess, im, None, views)[0] for im in batch]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                hidden = lead.backbone.infer_frozen(torch.cat(crops).to(device))
                labels = None
                if any(models[i].uses_fusion for i in members):
                    labels = torch.cat([crop_views(lead.preprocess, im, lab, views, pixels=False)[1]
                                        for im, lab in zip(batch, maps.get(s, len(batch)))]).to(device)
                for i in members:
                    f = models[i].encode_hidden(hidden, labels if models[i].uses_fusion else None)
                    f = torch.stack([c.mean(0) for c in f.float().split([c.shape[0] for c in crops])])
                    out[i].append(F.normalize(f, dim=-1).cpu())
    return [torch.cat(o) if o else torch.zeros(0, m.cfg.geo.embed_dim) for o, m in zip(out, models)]


class _LateMaps:
    """Label maps for the images, fetched from a call the first time they are needed and checked once."""

    def __init__(self, source: LabelMaps, n: int, needed: bool):
        self.source, self.n, self.maps = source, n, None
        if needed and not callable(source):  # given outright: wrong before any work, not after it
            self.maps = self._checked(source)

    def get(self, start: int, count: int) -> Sequence[np.ndarray]:
        if self.maps is None:
            self.maps = self._checked(self.source())
        return self.maps[start : start + count]

    def _checked(self, maps) -> Sequence[np.ndarray]:
        if maps is None or len(maps) != self.n or any(m is None for m in maps):
            raise ValueError("a model fuses semantics: every image needs a label map")
        return maps


def encode_images(
    model: GeoSURGE,
    images: Sequence[Image.Image],
    label_maps: Sequence[np.ndarray | None] | None = None,
    views: str = "center",
    batch_size: int = 16,
    progress: bool = False,
) -> torch.Tensor:
    """L2-normalized features (n, d) of RGB images, with the model's own preprocessing.

    ``label_maps`` (one per image, at image resolution) are required when the model fuses semantics.
    ``views`` ("center", "five", "ten": :data:`~geosurge.model.views.VIEWS`) selects the crops; each image's
    feature is the renormalized mean of its views' features.
    """
    return encode_images_multi([model], images, label_maps if model.uses_fusion else None, views, batch_size, progress)[0]


@torch.no_grad()
def image_features(model: GeoSURGE, records: GeoRecords, store=None, batch: int = 64, report: SkipReport | None = None,
                   progress: bool = False) -> tuple[torch.Tensor, np.ndarray]:
    """Centre-crop features (n, d) of the readable photos of ``records`` and their rows in the records.

    A fusion model reads each photo's label map from ``store``; photos that cannot be read, or have no
    label map, are left out and counted in ``report``.
    """
    feats, keep = [], []
    store = store if model.uses_fusion else None
    for got in example_batches(records, store, batch, report, progress="encoding" if progress else None):
        feats.append(encode_images(model, got.images, got.label_maps, batch_size=batch))
        keep.extend(got.rows)
    dim = model.cfg.geo.embed_dim
    return (torch.cat(feats) if feats else torch.zeros(0, dim)), np.asarray(keep, dtype=np.int64)


@torch.no_grad()
def view_features(model: GeoSURGE, views: ViewSet, batch_images: int = 32) -> torch.Tensor:
    """Features (n, d) of cached views: the renormalized mean of each photo's views' features (the cached
    counterpart of :func:`encode_images` with the same ``views``)."""
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(views), batch_images):
        h = views.hidden[s : s + batch_images]
        n, v = h.shape[:2]
        lab = views.labels[s : s + batch_images].flatten(0, 1).long().to(device) if views.labels is not None else None
        f = model.encode_hidden(h.flatten(0, 1).float().to(device), lab).view(n, v, -1).mean(1)
        out.append(F.normalize(f, dim=-1).cpu())
    return torch.cat(out)


def build_reference_index(
    features: torch.Tensor, lats: np.ndarray, lons: np.ndarray, ids: Sequence[str], hierarchy: Hierarchy
) -> ReferenceIndex:
    """Reference index of training images: features, coordinates, ids and their finest cell."""
    cells = hierarchy.assign(lats, lons)[:, -1]
    return ReferenceIndex(features=features, latlon=np.stack([lats, lons], axis=1).astype(np.float64), ids=list(ids), cells=cells)
