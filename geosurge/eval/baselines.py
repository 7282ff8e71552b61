"""Reference baselines: the training set's geographic median, and k-NN retrieval (IM2GPS) on backbone features."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..geo.distance import haversine_km, spherical_median
from ..model.geosurge import GeoSURGE
from ..model.views import ViewSet


def geographic_median(lats: np.ndarray, lons: np.ndarray, iterations: int = 200) -> tuple[float, float]:
    """The point minimizing the sum of great-circle distances to the training photos: the best
    constant guess in the mean-distance sense."""
    lat, lon = spherical_median(np.stack([lats, lons], axis=1), iterations=iterations)
    return float(lat), float(lon)


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
