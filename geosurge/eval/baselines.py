"""Reference baselines: the training set's geographic median, and k-NN retrieval (IM2GPS) on backbone features."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..geo.distance import haversine_km
from ..model.geosurge import GeoSURGE
from ..train.views import ViewSet


def geographic_median(lats: np.ndarray, lons: np.ndarray, iterations: int = 200) -> tuple[float, float]:
    """The point minimizing the sum of great-circle distances to the training photos (spherical
    Weiszfeld iterations on unit vectors): the best constant guess in the mean-distance sense."""
    la, lo = np.radians(lats), np.radians(lons)
    p = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=1)
    x = p.mean(0)
    x /= np.linalg.norm(x)
    for _ in range(iterations):
        d = np.arccos(np.clip(p @ x, -1.0, 1.0))
        w = 1.0 / np.maximum(d, 1e-9)
        nx = (p * w[:, None]).sum(0)
        nx /= np.linalg.norm(nx)
        if np.linalg.norm(nx - x) < 1e-12:
            break
        x = nx
    return float(np.degrees(np.arcsin(np.clip(x[2], -1, 1)))), float(np.degrees(np.arctan2(x[1], x[0])))


@torch.no_grad()
def backbone_view_features(model: GeoSURGE, views: ViewSet, batch_images: int = 64) -> torch.Tensor:
    """L2-normalized pooled backbone features (the CLS token: mean over the feature map), averaged over views."""
    out = []
    for s in range(0, len(views), batch_images):
        h = views.hidden[s : s + batch_images]
        n, v = h.shape[:2]
        cls = model.backbone.forward_trainable(h.flatten(0, 1).float())[:, 0]
        out.append(F.normalize(F.normalize(cls, dim=-1).view(n, v, -1).mean(1), dim=-1))
    return torch.cat(out)


def knn_predict(query: torch.Tensor, refs: torch.Tensor, ref_latlon: np.ndarray, k: int = 1, radius_km: float = 750.0) -> np.ndarray:
    """k-NN geolocation: the location of the nearest reference (k=1, IM2GPS), or for k>1 the neighbour
    with the most other neighbours within ``radius_km`` (a density vote that resists outliers)."""
    sims = query.float() @ refs.float().T
    idx = sims.topk(k, dim=1).indices.numpy()
    if k == 1:
        return ref_latlon[idx[:, 0]]
    pts = ref_latlon[idx]  # (n, k, 2)
    d = haversine_km(pts[:, :, None, 0], pts[:, :, None, 1], pts[:, None, :, 0], pts[:, None, :, 1])
    votes = (d <= radius_km).sum(-1)  # (n, k); ties go to the more similar neighbour (argmax takes the first)
    return pts[np.arange(len(pts)), votes.argmax(1)]
