import json

import numpy as np
import pytest

from geosurge.geo import Hierarchy, build_hierarchy, s2
from geosurge.geo.reference import partition_as_dict, reference_partition


def clustered_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Photo-like coordinates: dense clusters (cities) of various sizes plus a uniform background."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform([-60, -180], [70, 180], (40, 2))
    weights = rng.pareto(1.2, 40) + 0.05
    which = rng.choice(40, size=int(n * 0.9), p=weights / weights.sum())
    spread = rng.choice([0.01, 0.3, 3.0], size=which.size)
    lat = np.clip(centres[which, 0] + rng.normal(0, 1, which.size) * spread, -89.9, 89.9)
    lon = (centres[which, 1] + rng.normal(0, 1, which.size) * spread + 180) % 360 - 180
    bg = n - which.size
    lat = np.r_[lat, np.degrees(np.arcsin(rng.uniform(-1, 1, bg)))]
    lon = np.r_[lon, rng.uniform(-180, 180, bg)]
    return lat, lon


@pytest.fixture(scope="module")
def data():
    return clustered_points(30_000)


@pytest.fixture(scope="module")
def hier(data):
    return build_hierarchy(*data, tau_min=20, tau_maxes=[5000, 1000, 300, 100])


def test_api_shape(hier):
    assert len(hier.levels) == 4
    assert hier.tau_maxes == [5000, 1000, 300, 100]
    for k, p in enumerate(hier.levels):
        assert len(p.s2_tokens) == len(p) == p.counts.shape[0] == p.centroids.shape[0] == p.parents.shape[0]
        assert p.centroids.shape[1] == 2
        if k == 0:
            assert (p.parents == -1).all()
        else:
            assert (p.parents >= 0).all() and (p.parents < len(hier.levels[k - 1])).all()
    assert hier.num_cells == sorted(hier.num_cells)  # finer partitions have more cells


def test_counts_within_bounds_except_leaves(hier):
    for p in hier.levels:
        assert (p.counts >= hier.tau_min).all()
        over = p.counts > p.tau_max
        assert (p.s2_levels[over] == 30).all()


def test_counts_are_true_counts_and_centroids_inside(data, hier):
    lat, lon = data
    assign = hier.assign(lat, lon)
    for k, p in enumerate(hier.levels):
        np.testing.assert_array_equal(np.bincount(assign[assign[:, k] >= 0, k], minlength=len(p)), p.counts)
        # a spherical mean of points inside a cell lies inside the cell
        inside = p.containing_cell_index(s2.latlon_to_cell_id(p.centroids[:, 0], p.centroids[:, 1]))
        np.testing.assert_array_equal(inside, np.arange(len(p)))


def test_nesting_unique_parents(data, hier):
    anc = hier.ancestors()
    assert anc.shape == (len(hier.finest), 4)
    leaf = s2.range_min(hier.finest.ids)
    for k, p in enumerate(hier.levels):
        np.testing.assert_array_equal(p.containing_cell_index(leaf), anc[:, k])
    # every point kept at the finest level is kept at every coarser level, in its ancestor cell
    a = hier.assign(*data)
    kept = a[:, -1] >= 0
    np.testing.assert_array_equal(a[kept], anc[a[kept, -1]])


def test_cells_disjoint(hier):
    for p in hier.levels:
        lo, hi = s2.range_min(p.ids), s2.range_max(p.ids)
        assert (lo[1:] > hi[:-1]).all()


def test_matches_per_point_s2sphere_reference(data):
    lat, lon = data[0][:6000], data[1][:6000]
    h = build_hierarchy(lat, lon, tau_min=15, tau_maxes=[400, 60])
    for p in h.levels:
        assert partition_as_dict(p.ids, p.counts) == reference_partition(lat, lon, 15, p.tau_max)


def test_leaf_cells_may_exceed_tau_max():
    # 300 photos with identical coordinates cannot be split below S2 level 30
    lat = np.r_[np.full(300, 40.0), np.linspace(-10, 10, 50)]
    lon = np.r_[np.full(300, -3.0), np.linspace(-10, 10, 50)]
    h = build_hierarchy(lat, lon, tau_min=10, tau_maxes=[100])
    (p,) = h.levels
    assert p.counts.max() == 300 and p.s2_levels[p.counts.argmax()] == 30
    assert p.centroids[p.counts.argmax()] == pytest.approx([40.0, -3.0])


def test_antimeridian_centroid():
    lat = np.zeros(100)
    lon = np.r_[np.full(50, 179.9), np.full(50, -179.9)]
    h = build_hierarchy(lat, lon, tau_min=10, tau_maxes=[1000])
    assert abs(h.levels[0].centroids[0, 1]) == pytest.approx(180.0, abs=1e-6)


def test_assign_outside_is_minus_one(hier):
    # photos only around Paris: Sydney lies in no kept cell at any level, Paris's centre in one at every level
    rng = np.random.default_rng(3)
    paris = build_hierarchy(rng.normal(48.85, 0.3, 3000), rng.normal(2.35, 0.3, 3000), tau_min=20, tau_maxes=[2000, 300])
    got = paris.assign([-33.87, 48.85], [151.21, 2.35])
    assert got[0].tolist() == [-1, -1] and (got[1] >= 0).all()
    # and everywhere: -1 exactly where no kept cell's S2 range holds the point, else the cell that holds it
    lat, lon = np.degrees(np.arcsin(rng.uniform(-1, 1, 4000))), rng.uniform(-180, 180, 4000)
    cells = hier.assign(lat, lon)
    leaf = s2.latlon_to_cell_id(lat, lon).astype(np.uint64)
    assert (cells == -1).any() and (cells >= 0).any()
    for k, p in enumerate(hier.levels):
        ids = p.ids.astype(np.uint64)
        half = (ids & (~ids + np.uint64(1))) - np.uint64(1)  # lowest set bit - 1: the cell's leaf range half-width
        inside = (leaf[:, None] >= ids - half) & (leaf[:, None] <= ids + half)  # (points, cells)
        assert (inside.sum(1) <= 1).all()  # cells of one level do not overlap
        expect = np.where(inside.any(1), inside.argmax(1), -1)
        np.testing.assert_array_equal(cells[:, k], expect, err_msg=f"level {k}")


def test_round_trip(tmp_path, hier, data):
    hier.save(tmp_path)
    back = Hierarchy.load(tmp_path)
    assert back.tau_min == hier.tau_min and back.tau_maxes == hier.tau_maxes and back.n_samples == hier.n_samples
    for a, b in zip(hier.levels, back.levels):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_array_equal(a.centroids, b.centroids)
        np.testing.assert_array_equal(a.parents, b.parents)
        assert a.s2_tokens == b.s2_tokens
    np.testing.assert_array_equal(back.assign(*data), hier.assign(*data))


def test_load_errors(tmp_path, hier):
    with pytest.raises(FileNotFoundError, match="hierarchy.json"):
        Hierarchy.load(tmp_path)
    hier.save(tmp_path)
    meta = json.loads((tmp_path / "hierarchy.json").read_text())
    meta["num_cells"][0] += 1
    (tmp_path / "hierarchy.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not match"):
        Hierarchy.load(tmp_path)


def test_polygons(hier):
    p = hier.levels[1]
    v = p.polygons()
    assert v.shape == (len(p), 4, 2)
    poly = p.polygon(0)
    assert poly.is_valid and poly.area > 0


@pytest.mark.parametrize(
    "lat,lon,match",
    [
        ([0.0, np.nan, 1.0], [0.0, 0.0, 1.0], r"rows \(0-based\) 1"),
        ([0.0, 100.0], [0.0, 0.0], r"rows \(0-based\) 1"),
        ([0.0, 0.0], [0.0, 190.0], r"rows \(0-based\) 1"),
        ([], [], "empty"),
    ],
)
def test_bad_input(lat, lon, match):
    with pytest.raises(ValueError, match=match):
        build_hierarchy(lat, lon, tau_min=1, tau_maxes=[10])


def test_bad_taus():
    with pytest.raises(ValueError, match="tau_min"):
        build_hierarchy([0.0], [0.0], tau_min=50, tau_maxes=[10])
