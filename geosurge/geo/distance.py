"""Great-circle distances on a spherical Earth, for numpy arrays and torch tensors."""
from __future__ import annotations

from typing import Any

import numpy as np

#: Mean Earth radius in km (IUGG), the value GeoEstimation, GeoCLIP and OSV-5M use.
EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    """Great-circle distance in km between points given in degrees.

    Broadcasts like numpy. Torch tensors in give a torch tensor out (on the same device,
    differentiable); anything else is treated as array-like and gives a numpy array (or a float
    for scalar inputs).
    """
    if _is_torch(lat1) or _is_torch(lon1) or _is_torch(lat2) or _is_torch(lon2):
        return _haversine_torch(lat1, lon1, lat2, lon2)
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(x, dtype=np.float64)) for x in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    # clip: rounding can push `a` a hair above 1 for antipodes, and arcsin would return NaN.
    d = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return float(d) if d.ndim == 0 else d


def pairwise_haversine_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    """Distance matrix (n, m) between n points and m points (degrees in, km out)."""
    if _is_torch(lat1):
        return _haversine_torch(lat1[:, None], lon1[:, None], lat2[None, :], lon2[None, :])
    lat1, lon1 = np.asarray(lat1, np.float64), np.asarray(lon1, np.float64)
    return haversine_km(lat1[:, None], lon1[:, None], np.asarray(lat2)[None, :], np.asarray(lon2)[None, :])


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _haversine_torch(lat1, lon1, lat2, lon2):
    import torch

    ref = next(x for x in (lat1, lon1, lat2, lon2) if isinstance(x, torch.Tensor))
    dtype = ref.dtype if ref.is_floating_point() else torch.float64
    lat1, lon1, lat2, lon2 = (torch.deg2rad(torch.as_tensor(x, dtype=dtype, device=ref.device)) for x in (lat1, lon1, lat2, lon2))
    a = torch.sin((lat2 - lat1) / 2) ** 2 + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * torch.arcsin(torch.sqrt(a.clamp(0.0, 1.0)))


def spherical_median(latlon: Any, weights: Any | None = None, iterations: int = 100) -> Any:
    """Weighted geometric median on the sphere: the point minimizing the weighted sum of great-circle
    distances (Weiszfeld iterations on unit vectors), batched.

    ``latlon`` (..., K, 2) in degrees, ``weights`` (..., K) (uniform when None); returns (..., 2).
    Torch in, torch out (float64 inside); numpy otherwise.
    """
    import torch

    as_numpy = not _is_torch(latlon)
    ll = torch.deg2rad(torch.as_tensor(np.asarray(latlon) if as_numpy else latlon, dtype=torch.float64))
    w = torch.ones(ll.shape[:-1], dtype=torch.float64, device=ll.device) if weights is None else \
        torch.as_tensor(np.asarray(weights) if as_numpy else weights, dtype=torch.float64, device=ll.device)
    w = w / w.sum(-1, keepdim=True)
    lat, lon = ll[..., 0], ll[..., 1]
    p = torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], -1)
    x = torch.nn.functional.normalize((w[..., None] * p).sum(-2), dim=-1)
    for _ in range(iterations):
        d = torch.arccos((p * x[..., None, :]).sum(-1).clamp(-1, 1)).clamp_min(1e-9)
        x = torch.nn.functional.normalize(((w / d)[..., None] * p).sum(-2), dim=-1)
    out = torch.stack([torch.rad2deg(torch.arcsin(x[..., 2].clamp(-1, 1))), torch.rad2deg(torch.atan2(x[..., 1], x[..., 0]))], -1)
    return out.numpy() if as_numpy else out
