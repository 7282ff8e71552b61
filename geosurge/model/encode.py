"""Batch feature extraction shared by the Predictor, reference indexing and evaluation."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..geo.hierarchy import Hierarchy
from .geosurge import GeoSURGE
from .hierarchical import ReferenceIndex


@torch.no_grad()
def encode_images(
    model: GeoSURGE,
    images: Sequence[Image.Image],
    label_maps: Sequence[np.ndarray | None] | None = None,
    ten_crop: bool = False,
    batch_size: int = 16,
    progress: bool = False,
) -> torch.Tensor:
    """L2-normalized features (n, d) of RGB images, with the model's own preprocessing.

    ``label_maps`` (one per image, at image resolution) are required when the model fuses semantics.
    With ``ten_crop`` each image's feature is the renormalized mean of its ten crops' features.
    """
    device = next(model.parameters()).device
    if model.uses_fusion and (label_maps is None or any(m is None for m in label_maps)):
        raise ValueError("this model fuses semantics: every image needs a label map")
    maps = list(label_maps) if model.uses_fusion else [None] * len(images)
    pre = model.preprocess
    crops = "ten" if ten_crop else "center"
    out = []
    starts = range(0, len(images), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="encoding", unit="batch")
    for s in starts:
        px, lb, n = [], [], []
        for im, lab in zip(images[s : s + batch_size], maps[s : s + batch_size]):
            x, y = pre(im, lab, crops=crops)
            px.append(x)
            lb.append(y)
            n.append(x.shape[0])
        pixels = torch.cat(px).to(device)
        labels = torch.cat(lb).to(device) if model.uses_fusion else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            f = model.encode(pixels, labels)
        f = torch.stack([c.mean(0) for c in f.float().split(n)])
        out.append(F.normalize(f, dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, model.cfg.geo.embed_dim)


def build_reference_index(
    features: torch.Tensor, lats: np.ndarray, lons: np.ndarray, ids: Sequence[str], hierarchy: Hierarchy
) -> ReferenceIndex:
    """Reference index of training images: features, coordinates, ids and their finest cell."""
    cells = hierarchy.assign(lats, lons)[:, -1]
    return ReferenceIndex(features=features, latlon=np.stack([lats, lons], axis=1).astype(np.float64), ids=list(ids), cells=cells)
