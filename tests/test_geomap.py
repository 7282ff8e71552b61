"""The prediction map on its own (no server): what one answer's document holds, its size, the static assets
it links (the offline basemap among them) and how they are served. Needs nothing from ``../shared``."""
from __future__ import annotations

import html
import io
import json
import re
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from geosurge.app import geomap
from geosurge.app.geomap import ASSETS, BASEMAP, MAX_REGION_CELLS, prediction_map

#: loose bound on one answer's map HTML (issue #23: it was 481 kB with Leaflet inlined; ~90 kB now)
MAX_PAYLOAD = 150_000


@pytest.fixture(scope="module")
def answer():
    """The embedded RGB-only model's answer for a shipped example photo, a second answer to draw beside it,
    and the hierarchy."""
    from geosurge.app.settings import EXAMPLES
    from geosurge.predictor import Predictor

    p = Predictor.from_pretrained(segmenter=None)
    [pred] = p.predict(str(sorted(EXAMPLES.glob("*.jpg"))[0]), level_top=5, fusion=False)
    other = replace(pred, lat=pred.lat + 3.0, lon=pred.lon - 4.0)
    return pred, other, p.variants["rgb"].hierarchy


def spec_of(page: str) -> dict:
    """The answer's JSON document inside the iframe's srcdoc, its rings resolved."""
    doc = html.unescape(re.search(r'srcdoc="([^"]*)"', page).group(1))
    return json.loads(re.search(r"GeoSurgeMap\.draw\(\w+, (\{.*\})\);", doc, flags=re.S).group(1))


def test_map_document_has_every_level_regions_points_and_legend(answer):
    pred, other, hierarchy = answer
    page = prediction_map(pred, hierarchy, "rgb", other, "fusion", truth=(51.5, -0.1))
    assert len(page.encode()) < MAX_PAYLOAD, len(page.encode())
    spec = spec_of(page)
    rings = spec["rings"]
    # all 7 levels, each cell's tooltip carrying its product score, drawn with the level's class
    assert len(spec["levels"]) == len(pred.levels) == 7
    for k, (layer, cells) in enumerate(zip(spec["levels"], pred.levels)):
        assert layer["className"].endswith(f"geosurge-level-{k + 1}") and len(layer["cells"]) == len(cells) > 0
        for (ring, tip, _, _), c in zip(layer["cells"], cells):
            assert f"level {k + 1}" in tip and f"product score {c.score:.4g}" in tip and c.token in tip
            assert len(rings[ring]) >= 4
    # the credible regions: one multi-ring polygon each, the 50 % cells among the 90 % ones
    regions = {r["q"]: r for r in spec["regions"]}
    assert set(regions) == {50, 90}
    for q, r in regions.items():
        assert len(r["take"]) == min(len(pred.credible[q]), MAX_REGION_CELLS)
        assert f"geosurge-region-{q}" in r["style"]["className"] and r["style"]["fillRule"] == "nonzero"
        for i in r["take"]:
            ring = np.array(rings[i])
            assert ring.shape[1] == 2 and len(ring) >= 4 and np.all(np.abs(ring[:, 0]) <= 90)
    assert set(regions[50]["take"]) <= set(regions[90]["take"])
    assert len(rings) == len(set(regions[90]["take"])) + sum(len(c) for c in pred.levels)  # each region cell once
    # points and lines: both predictions and the truth
    assert [p["className"].split()[-1] for p in spec["points"]] == ["geosurge-pred-rgb", "geosurge-pred-fusion", "geosurge-truth"]
    assert [line["className"] for line in spec["lines"]] == ["geosurge-between", "geosurge-error"]
    # the legend names every layer drawn
    labels = [e[2] for e in spec["legend"]["entries"]]
    for want in ("RGB-only prediction", "fusion prediction", "true location (EXIF GPS)", regions[50]["name"],
                 regions[90]["name"], "land, borders (Natural Earth)", "sea"):
        assert want in labels, (want, labels)
    assert sum(label.startswith("level ") for label in labels) == 7
    assert not spec["tiles"]["show"] and not any("OpenStreetMap" in label for label in labels)
    # the view is fitted around the points
    (south, west), (north, east) = spec["fit"]["bounds"]
    for p in spec["points"]:
        assert south <= p["at"][0] <= north and west <= p["at"][1] <= east


def test_online_tiles_are_drawn_only_when_asked_and_named(answer):
    pred, _, hierarchy = answer
    spec = spec_of(prediction_map(pred, hierarchy, "rgb", online_tiles=True))
    assert spec["tiles"]["show"] and spec["tiles"]["url"].startswith("https://")
    assert "OpenStreetMap tiles (online)" in [e[2] for e in spec["legend"]["entries"]]


def test_nothing_static_is_inlined_and_every_link_resolves(answer):
    """Leaflet, topojson-client, the basemap and the drawing script are linked (relative to the page, with a
    content-hash version) and exist in the package; none of them is copied into the answer."""
    pred, _, hierarchy = answer
    page = html.unescape(prediction_map(pred, hierarchy, "rgb"))
    links = re.findall(r'(?:src|href)="([^"]+)"', page) + [spec_of(prediction_map(pred, hierarchy, "rgb"))["basemap"]["url"]]
    prefix = f"{geomap.ASSET_ROUTE}/{geomap.asset_version()}/"
    assert len(links) == 5 and all(u.startswith(prefix) for u in links), links
    for u in links:
        assert (ASSETS / u[len(prefix):]).is_file(), u
    assert (ASSETS / "geosurge-map.js").read_text()[:2000] not in page
    assert "L.Map" not in page and "topology" not in page.lower()  # neither Leaflet nor the basemap inlined


def test_basemap_is_natural_earth_topojson_with_its_note():
    topo = json.loads(BASEMAP.read_text())
    assert topo["type"] == "Topology" and {"land", "countries"} <= set(topo["objects"])
    countries = topo["objects"]["countries"]["geometries"]
    assert len(countries) > 200 and {"France", "Brazil", "Japan"} <= {g["properties"]["name"] for g in countries}
    assert len(topo["arcs"]) > 1000 and topo["transform"]["translate"] == [-180, -89.999]
    note = (BASEMAP.parent / "README.md").read_text()
    assert "public domain" in note and "Natural Earth" in note and "world-atlas" in note
    assert "ISC" in note or "Permission to use" in (BASEMAP.parent / "LICENSE").read_text()
    for icon in ("layers.png", "layers-2x.png", "marker-icon.png"):
        with Image.open(geomap.LEAFLET / "images" / icon) as im:
            assert im.format == "PNG" and im.width > 10


def test_assets_are_served_once_with_immutable_caching():
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    client = TestClient(Starlette(routes=[Mount(geomap.mount_path(), geomap.asset_app())]))
    base = geomap.mount_path()
    r = client.get(f"{base}/vendor/leaflet-1.9.4/images/layers.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert "immutable" in r.headers["cache-control"] and "max-age=31536000" in r.headers["cache-control"]
    assert Image.open(io.BytesIO(r.content)).size == (26, 26)
    r = client.get(f"{base}/vendor/world-atlas-2.0.2/countries-50m.json")
    assert r.status_code == 200 and r.json()["type"] == "Topology"
    assert client.get(f"{base}/../geomap.py").status_code == 404
    assert client.get(f"{base}/vendor/missing.js").status_code == 404


def test_cell_rings_are_cached_and_follow_the_map_centre(answer):
    """Rings built once per partition match the per-cell drawing (`_ring`), rounded, and move by whole turns
    to the world copy around the answer."""
    _, _, hierarchy = answer
    part = hierarchy.finest
    rings = geomap.cell_rings(part)
    assert geomap.cell_rings(part) is rings and len(rings.text) == len(part)
    for i in (0, len(part) // 2, len(part) - 1):
        drawn = np.array(json.loads(rings.json([i], 0.0)[0]))
        corners = np.array(geomap._ring(part.polygons(1)[i]))
        if len(drawn) == 4:  # a small cell: its 4 corners (larger ones get 4 points per edge)
            assert np.allclose(drawn, corners, atol=6e-4)
        east = np.array(json.loads(rings.json([i], rings.mids[i] + 300.0)[0]))
        assert np.allclose(east, drawn + [0.0, 360.0], atol=1e-9)


def test_online_tiles_setting_defaults_to_off_but_on_a_space(monkeypatch):
    from geosurge.app.settings import parse_settings

    monkeypatch.delenv("GEOSURGE_ONLINE_TILES", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert parse_settings([]).online_tiles is False
    assert parse_settings(["--online-tiles"]).online_tiles is True
    monkeypatch.setenv("SPACE_ID", "org/geosurge")
    assert parse_settings([]).online_tiles is True
    assert parse_settings(["--no-online-tiles"]).online_tiles is False
    monkeypatch.setenv("GEOSURGE_ONLINE_TILES", "0")
    assert parse_settings([]).online_tiles is False
