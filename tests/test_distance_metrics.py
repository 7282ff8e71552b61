import math

import numpy as np
import pytest
import torch

from geosurge.geo import accuracy_report, geoscore, haversine_km, pairwise_haversine_km

PARIS = (48.8566, 2.3522)
LONDON = (51.5074, -0.1278)


def test_paris_london():
    assert haversine_km(*PARIS, *LONDON) == pytest.approx(343.5, abs=0.5)


def test_antipodes_and_identity():
    assert haversine_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(20015.1, abs=0.5)
    assert haversine_km(10.0, 20.0, -10.0, -160.0) == pytest.approx(20015.1, abs=0.5)
    assert haversine_km(45.0, 45.0, 45.0, 45.0) == 0.0


def test_vectorized_numpy_matches_scalar():
    rng = np.random.default_rng(0)
    a = rng.uniform([-90, -180], [90, 180], (100, 2))
    b = rng.uniform([-90, -180], [90, 180], (100, 2))
    d = haversine_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    assert d.shape == (100,)
    for k in range(0, 100, 17):
        assert d[k] == pytest.approx(haversine_km(float(a[k, 0]), float(a[k, 1]), float(b[k, 0]), float(b[k, 1])))
    m = pairwise_haversine_km(a[:5, 0], a[:5, 1], b[:7, 0], b[:7, 1])
    assert m.shape == (5, 7)
    assert m[2, 3] == pytest.approx(haversine_km(a[2, 0], a[2, 1], b[3, 0], b[3, 1]))


def test_torch_matches_numpy_and_is_differentiable():
    rng = np.random.default_rng(1)
    a = rng.uniform([-90, -180], [90, 180], (50, 2))
    b = rng.uniform([-90, -180], [90, 180], (50, 2))
    ref = haversine_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    lat = torch.tensor(a[:, 0], requires_grad=True)
    d = haversine_km(lat, torch.tensor(a[:, 1]), torch.tensor(b[:, 0]), torch.tensor(b[:, 1]))
    assert isinstance(d, torch.Tensor)
    np.testing.assert_allclose(d.detach().numpy(), ref, rtol=1e-10)
    d.sum().backward()
    assert torch.isfinite(lat.grad).all()
    m = pairwise_haversine_km(torch.tensor(a[:3, 0]), torch.tensor(a[:3, 1]), torch.tensor(b[:4, 0]), torch.tensor(b[:4, 1]))
    assert m.shape == (3, 4)


def test_accuracy_table_hand_made():
    # true point at the origin; predictions at known distances along the equator
    km_per_deg = math.pi * 6371.0088 / 180
    dists = np.array([0.5, 10, 100, 500, 2000, 5000])
    pred_lon = dists / km_per_deg
    r = accuracy_report(np.zeros(6), pred_lon, np.zeros(6), np.zeros(6))
    assert r.n == 6
    assert r.accuracy == pytest.approx({1.0: 100 / 6, 25.0: 200 / 6, 200.0: 300 / 6, 750.0: 400 / 6, 2500.0: 500 / 6})
    assert r.median_km == pytest.approx((100 + 500) / 2, rel=1e-6)
    assert r.geoscore == pytest.approx(np.mean(5000 * np.exp(-dists / 1492.7)), rel=1e-6)
    d = r.as_dict()
    assert d["acc_1km"] == pytest.approx(100 / 6) and d["acc_2500km"] == pytest.approx(500 / 6) and d["n"] == 6
    assert "| 1 km |" in r.to_markdown()


def test_threshold_is_inclusive_and_geoscore_bounds():
    assert geoscore(np.array([0.0]))[0] == 5000.0
    assert geoscore(np.array([1492.7]))[0] == pytest.approx(5000 / math.e)


def test_country_accuracy_offline():
    # Paris predicted for Paris and for London: one right country out of two
    r = accuracy_report([48.85, 48.85], [2.35, 2.35], [48.86, 51.5], [2.34, -0.12], countries=True)
    assert r.country_accuracy == pytest.approx(50.0)


@pytest.mark.parametrize(
    "lats,lons,needle",
    [
        ([10.0, float("nan")], [0.0, 0.0], "rows (0-based) 1"),
        ([10.0, 91.0], [0.0, 0.0], "rows (0-based) 1"),
        ([10.0, 0.0, 0.0], [0.0, 181.0, -200.0], "2 row(s)"),
        ([], [], "empty"),
        ([1.0, 2.0], [1.0], "2 latitudes but 1 longitudes"),
    ],
)
def test_bad_coordinates_raise(lats, lons, needle):
    with pytest.raises(ValueError, match=".*") as e:
        accuracy_report(lats, lons, lats, lons)
    assert needle in str(e.value)


def test_spherical_median_minimizes_weighted_distance():
    from geosurge.geo.distance import spherical_median

    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(35, 60, 12), rng.uniform(-10, 30, 12)], 1)
    w = rng.uniform(0.1, 1.0, 12)
    m = spherical_median(pts, w)

    def cost(lat, lon):
        return (w * haversine_km(lat, lon, pts[:, 0], pts[:, 1])).sum()

    grid = [(a, b) for a in np.arange(30, 65, 0.25) for b in np.arange(-15, 35, 0.25)]
    assert cost(*m) <= min(cost(a, b) for a, b in grid) + 1e-6
    # batched: each row its own median; torch in, torch out
    both = spherical_median(torch.tensor(np.stack([pts, pts[::-1]])), torch.tensor(np.stack([w, np.ones(12)])))
    assert isinstance(both, torch.Tensor) and both.shape == (2, 2)
    assert np.allclose(both[0].numpy(), m, atol=1e-6)
    # one point is its own median, even across the antimeridian
    assert np.allclose(spherical_median(np.array([[10.0, 179.9], [10.0, 179.9]])), [10.0, 179.9], atol=1e-6)
