import numpy as np
import pytest
import s2sphere

from geosurge.geo import s2


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 3000)))
    lon = rng.uniform(-180, 180, 3000)
    # poles, antimeridian, face edges and corners
    lat = np.r_[lat, 90, -90, 0, 0, 0, 45, -45, 35.26438968, -35.26438968, 0]
    lon = np.r_[lon, 0, 0, 180, -180, 45, 45, 135, 45, -135, 90]
    return lat, lon


def _ref_id(lat, lon):
    return s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(float(lat), float(lon)))


def test_leaf_ids_match_s2sphere(points):
    lat, lon = points
    ids = s2.latlon_to_cell_id(lat, lon)
    ref = np.array([_ref_id(a, b).id() for a, b in zip(lat, lon)], dtype=np.uint64)
    np.testing.assert_array_equal(ids, ref)


@pytest.mark.parametrize("level", [0, 1, 7, 13, 22, 29])
def test_parent_level_tokens_match_s2sphere(points, level):
    lat, lon = points
    ids = s2.latlon_to_cell_id(lat[:200], lon[:200], level=level)
    ref = [_ref_id(a, b).parent(level) for a, b in zip(lat[:200], lon[:200])]
    assert ids.tolist() == [c.id() for c in ref]
    assert s2.ids_to_tokens(ids) == [c.to_token() for c in ref]
    assert (s2.cell_level(ids) == level).all()
    np.testing.assert_array_equal(s2.tokens_to_ids(s2.ids_to_tokens(ids)), ids)


def test_face_ij_round_trip(points):
    lat, lon = points
    ids = s2.latlon_to_cell_id(lat, lon)
    face, i, j = s2.cell_id_to_face_ij(ids)
    np.testing.assert_array_equal(s2.face_ij_to_cell_id(face, i, j), ids)


def test_vertices_match_s2sphere():
    ids = s2.latlon_to_cell_id(np.array([48.85, -33.9, 70.0]), np.array([2.35, 151.2, -179.9]), level=9)
    v = s2.cell_vertices(ids)
    for k, cid in enumerate(ids):
        cell = s2sphere.Cell(s2sphere.CellId(int(cid)))
        for q in range(4):
            ll = s2sphere.LatLng.from_point(cell.get_vertex(q))
            assert v[k, q, 0] == pytest.approx(ll.lat().degrees, abs=1e-9)
            assert v[k, q, 1] == pytest.approx(ll.lng().degrees, abs=1e-9)


def test_sampled_points_fall_in_their_cells():
    rng = np.random.default_rng(3)
    cells = s2.latlon_to_cell_id(rng.uniform(-80, 80, 40), rng.uniform(-180, 180, 40), level=11)
    pts = s2.sample_in_cells(cells, np.full(40, 25), rng)
    back = s2.latlon_to_cell_id(pts[:, 0], pts[:, 1], level=11)
    np.testing.assert_array_equal(back, np.repeat(cells, 25))


def test_containing_cell_index():
    cells = np.sort(s2.latlon_to_cell_id(np.array([0.0, 50.0]), np.array([0.0, 10.0]), level=5))
    leaves = s2.latlon_to_cell_id(np.array([0.0, 50.0, -40.0]), np.array([0.0, 10.0, 100.0]))
    got = s2.containing_cell_index(cells, leaves)
    assert got[2] == -1
    assert sorted(got[:2].tolist()) == [0, 1]


@pytest.mark.parametrize("bad", ["8.9E+044", "", "XYZ", "4.7e1", "0", "c" * 16 + "0", "e"])
def test_malformed_tokens_rejected(bad):
    assert not s2.is_valid_token(bad)
    with pytest.raises(ValueError, match="malformed S2 token"):
        s2.tokens_to_ids([bad])


def test_wellformed_tokens_accepted():
    for tok in ["1", "47a1", "47A1", "89c25", "8f1c"]:
        assert s2.is_valid_token(tok)
