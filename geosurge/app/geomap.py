"""The prediction map: top cells of every hierarchy level as S2 polygons, credible regions, predictions, truth.

A Folium map whose answer-specific part is one JSON document drawn by ``assets/geosurge-map.js``. Everything
that is the same for every answer (Leaflet, its control icons, the offline Natural Earth basemap, the drawing
code) is a static file under ``assets/``, served once and cached by the browser (:func:`asset_app`, mounted at
:data:`ASSET_ROUTE` by the server), never inlined per answer. The basemap needs no network; OpenStreetMap
tiles are drawn on top of it only when asked for (``online_tiles``: a Space), so offline no request fails.
"""
from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import folium
import numpy as np
import xyzservices
from branca.element import MacroElement
from jinja2 import Template

from ..geo.distance import haversine_km
from ..geo.hierarchy import Hierarchy, Partition
from ..model.variants import FUSION, RGB, VARIANTS
from ..predictor import Prediction

ASSETS = Path(__file__).resolve().parent / "assets"
LEAFLET = ASSETS / "vendor" / "leaflet-1.9.4"
BASEMAP = ASSETS / "vendor" / "world-atlas-2.0.2" / "countries-50m.json"
#: where the server mounts ``ASSETS``; the map's URLs are relative to the page, so they also resolve in the
#: map's ``srcdoc`` iframe (whose base URL is its parent's) and under a path prefix.
ASSET_ROUTE = "geosurge-assets"
#: coarse -> fine; distinct hues that stay readable over a map
LEVEL_COLOURS = ["#4e79a7", "#59a14f", "#edc948", "#f28e2b", "#e15759", "#b07aa1", "#76005f"]
PRED_COLOURS = {FUSION: "#d62728", RGB: "#1f77b4"}
TRUTH_COLOUR = "#2ca02c"
REGION_COLOURS = {50: "#7b3294", 90: "#c2a5cf"}
#: the offline basemap (OpenStreetMap's land and water colours, so switching to its tiles is no jump)
LAND, SEA, BORDER = "#f2efe9", "#aad3df", "#9e8f9e"
#: at most this many finest cells are drawn per credible region (a flat posterior spreads 90 % over most cells)
MAX_REGION_CELLS = 1200
#: Padding (px) that keeps the fitted points clear of the map's corners: the zoom buttons and the layer
#: button across the top; on the right the script adds the legend's own width.
FIT_TOP_LEFT, FIT_BOTTOM_RIGHT = (20, 64), (20, 20)
#: a cell is drawn with 4 points per edge instead of its 4 corners where straight edges would stray further
#: than this (degrees; ~1 px at the zoom the map usually fits, 5): S2 edges are geodesics, curved on a map
MAX_CHORD_ERROR_DEG = 0.02


@lru_cache(maxsize=1)
def asset_version() -> str:
    """A short hash of the static assets: part of their URL, so browsers may cache them forever."""
    h = hashlib.sha1()
    for p in sorted(ASSETS.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(ASSETS)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:10]


def asset_url(relative: str) -> str:
    return f"{ASSET_ROUTE}/{asset_version()}/{relative}"


def asset_app():
    """An ASGI app serving ``ASSETS`` with a year of immutable caching (the URL carries :func:`asset_version`);
    the server mounts it at ``/ASSET_ROUTE/<version>`` (:func:`mount_path`)."""
    from starlette.staticfiles import StaticFiles

    class ImmutableStatic(StaticFiles):
        def file_response(self, *args, **kwargs):
            response = super().file_response(*args, **kwargs)
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
            return response

    return ImmutableStatic(directory=ASSETS)


def mount_path() -> str:
    return f"/{ASSET_ROUTE}/{asset_version()}"


def _head() -> str:
    """The static part of the map page's <head>: links to the cached assets, nothing inlined."""
    css = [asset_url("vendor/leaflet-1.9.4/leaflet.css")]
    js = [asset_url(p) for p in ("vendor/leaflet-1.9.4/leaflet.js", "vendor/topojson-client-3.1.0/topojson-client.min.js",
                                 "geosurge-map.js")]
    return "".join(f'<link rel="stylesheet" href="{u}">' for u in css) + "".join(f'<script src="{u}"></script>' for u in js)


# --- cell rings ------------------------------------------------------------------------------------------

def _rings(latlon: np.ndarray, centre_lon: float = 0.0) -> list[np.ndarray]:
    """Cell boundaries (n, m, 2) lat/lon as Leaflet should draw them, (k, 2) each: longitudes unwrapped along
    the ring (cells across the antimeridian), and a ring that winds once around a pole (a polar S2 face, or any
    cell holding a pole) closed over that pole, else it would be drawn as a thin band along its boundary.
    Each ring is shifted by whole turns to the world copy around ``centre_lon`` (the map's centre)."""
    lat = np.asarray(latlon[..., 0], dtype=np.float64)
    lon = np.degrees(np.unwrap(np.radians(latlon[..., 1]), axis=1))
    winding = lon[:, -1] - lon[:, 0] + (lon[:, 0] - lon[:, -1] + 180.0) % 360.0 - 180.0  # incl. the closing edge
    shift = 360.0 * np.round(((lon.min(1) + lon.max(1)) / 2 - centre_lon) / 360.0)
    out = list(np.stack([lat, lon - shift[:, None]], axis=-1))
    for k in np.flatnonzero(np.abs(winding) > 180.0):
        pole = 90.0 if lat[k].mean() > 0 else -90.0
        end = lon[k, 0] + winding[k]
        a, b = np.r_[lat[k], lat[k, 0], pole, pole], np.r_[lon[k], end, end, lon[k, 0]]
        b = b - 360.0 * np.round(((b.min() + b.max()) / 2 - centre_lon) / 360.0)
        out[k] = np.stack([a, b], axis=1)
    return out


def _ring(latlon, centre_lon: float = 0.0) -> list[tuple[float, float]]:
    """One cell boundary as :func:`_rings` draws it, as (lat, lon) pairs."""
    return [(float(a), float(b)) for a, b in _rings(np.asarray(latlon)[None], centre_lon)[0]]


@dataclass
class CellRings:
    """Every cell of one partition as drawn on the world copy around longitude 0, built once (vectorised)
    and reused by every answer: the rings, their mid longitudes and their JSON text."""

    rings: list[np.ndarray]
    mids: np.ndarray
    text: list[str]

    def json(self, cells, centre_lon: float) -> list[str]:
        """The rings of ``cells`` as JSON on the world copy nearest ``centre_lon`` (cached text for the usual copy)."""
        cells = np.asarray(cells, dtype=np.int64)
        turns = np.round((self.mids[cells] - centre_lon) / 360.0)
        return [self.text[i] if t == 0 else _ring_json(self.rings[i] - [0.0, 360.0 * t])
                for i, t in zip(cells.tolist(), turns.tolist())]

    def ring(self, i: int, centre_lon: float) -> np.ndarray:
        return self.rings[i] - [0.0, 360.0 * round((float(self.mids[i]) - centre_lon) / 360.0)]


def _ring_json(ring: np.ndarray) -> str:
    return json.dumps(np.round(ring, 3).tolist(), separators=(",", ":"))  # 0.001 degree: ~100 m


def _chord_error(corners: np.ndarray, detailed: np.ndarray) -> float:
    """How far (degrees) a ring of straight lat/lon edges between the 4 corners strays from the cell's
    boundary sampled at 4 points per edge (inf for rings closed over a pole, which differ in length)."""
    if len(corners) != 4 or len(detailed) != 16:
        return float("inf")
    t = np.array([0.0, 0.25, 0.5, 0.75])[None, :, None]
    chords = corners[:, None, :] * (1 - t) + np.roll(corners, -1, axis=0)[:, None, :] * t
    return float(np.abs(chords.reshape(16, 2) - detailed).max())


_CELL_RINGS: dict[bytes, CellRings] = {}


def cell_rings(partition: Partition) -> CellRings:
    """:class:`CellRings` of ``partition``, cached by the cells' ids (one entry per partition ever drawn)."""
    key = hashlib.sha1(np.ascontiguousarray(partition.ids).tobytes()).digest()
    if key not in _CELL_RINGS:
        coarse, fine = _rings(partition.polygons(1)), _rings(partition.polygons(4))
        rings = [f if _chord_error(c, f) > MAX_CHORD_ERROR_DEG else c for c, f in zip(coarse, fine)]
        mids = np.array([(r[:, 1].min() + r[:, 1].max()) / 2 for r in rings])
        _CELL_RINGS[key] = CellRings(rings, mids, [_ring_json(r) for r in rings])
    return _CELL_RINGS[key]


# --- what the map shows ----------------------------------------------------------------------------------

def _near(lon: float, centre_lon: float) -> float:
    """``lon`` moved by whole turns to the world copy nearest ``centre_lon``, so that a line from the
    centre takes the short way across the antimeridian instead of crossing the whole map."""
    return lon - 360.0 * round((lon - centre_lon) / 360.0)


def _chance(pred: Prediction) -> str:
    """The widest calibrated chance ("41 % within 2,500 km"), or the product score without a posterior."""
    if not pred.within_km:
        return f"product score {pred.score:.3g}"
    r = max(pred.within_km)
    return f"{100 * pred.within_km[r]:.0f} % within {r:,} km"


def _colour(level: int) -> str:
    return LEVEL_COLOURS[level % len(LEVEL_COLOURS)]


def _legend_name(variant: str) -> str:
    return f"{VARIANTS[variant].label} prediction" if variant in VARIANTS else variant


def legend_entries(primary_name: str, other_name: str | None, truth: bool, levels: int,
                   regions: dict[int, str] | None = None, online_tiles: bool = False) -> list[tuple[str, str, str]]:
    """(kind, colour, label) of every layer drawn: points, credible regions, cell levels, the basemap."""
    entries = [("point", PRED_COLOURS.get(primary_name, "#d62728"), _legend_name(primary_name))]
    if other_name:
        entries.append(("point", PRED_COLOURS.get(other_name, "#1f77b4"), _legend_name(other_name)))
    if truth:
        entries.append(("point", TRUTH_COLOUR, "true location (EXIF GPS)"))
    entries += [("cell", REGION_COLOURS.get(q, "#888888"), label) for q, label in sorted((regions or {}).items())]
    entries += [("cell", _colour(k), f"level {k + 1} cells" + (" (coarsest)" if k == 0 else " (finest)" if k == levels - 1 else ""))
                for k in range(levels)]
    entries += [("cell", LAND, "land, borders (Natural Earth)"), ("cell", SEA, "sea")]
    if online_tiles:
        entries.append(("cell", "#e0dcd4", "OpenStreetMap tiles (online)"))
    return entries


def _region_layers(pred: Prediction, hierarchy: Hierarchy, rings: list[str]) -> list[dict]:
    """The smallest sets of finest cells holding 50 % and 90 % of the posterior, one layer per set drawn as a
    single multi-ring polygon; a cell's ring is appended to ``rings`` once (the 50 % set lies inside the 90 %)."""
    where: dict[int, int] = {}
    layers = []
    for q in sorted(pred.credible, reverse=True):  # 90 % below 50 %
        cells = pred.credible[q]
        new = [i for i in dict.fromkeys(int(i) for i in cells[:MAX_REGION_CELLS]) if i not in where]
        where.update(zip(new, range(len(rings), len(rings) + len(new))))
        rings.extend(cell_rings(hierarchy.finest).json(new, pred.lon))
        take = [where[int(i)] for i in cells[:MAX_REGION_CELLS]]
        more = f"{MAX_REGION_CELLS} of {len(cells)} cells drawn" if len(cells) > MAX_REGION_CELLS else f"{len(cells)} cells"
        colour = REGION_COLOURS.get(q, "#888888")
        layers.append({"q": q, "name": f"{q} % credible region ({more})", "take": take,
                       "tip": f"inside the {q} % credible region ({len(cells)} cells)",
                       "style": {"color": colour, "weight": 0.5, "fillColor": colour, "fillOpacity": 0.25,
                                 "fillRule": "nonzero", "className": f"geosurge-region geosurge-region-{q}"}})
    return layers


def _level_layers(pred: Prediction, hierarchy: Hierarchy, rings: list[str]) -> list[dict]:
    """Per level a toggleable layer of its top cells, with the product score in each tooltip; each cell is
    [ring index, tooltip, stroke weight, fill opacity]."""
    layers = []
    for k, cells in enumerate(pred.levels):
        first = len(rings)
        rings.extend(cell_rings(hierarchy.levels[k]).json([c.index for c in cells], pred.lon))
        drawn = []
        for rank, c in enumerate(cells):
            tip = (f"<b>level {k + 1}</b> · #{rank + 1} · cell {html.escape(c.token)}<br>"
                   f"product score {c.score:.4g}<br>cell centre {c.lat:.3f}, {c.lon:.3f}")
            drawn.append([first + rank, tip, 2 if rank == 0 else 1, round(0.08 + 0.3 * min(1.0, c.score ** 0.5), 3)])
        layers.append({"name": f"level {k + 1}: top {len(cells)} cells ({len(hierarchy.levels[k])} in all)",
                       "colour": _colour(k), "className": f"geosurge-cell geosurge-level-{k + 1}", "cells": drawn})
    return layers


def _points(primary: Prediction, primary_name: str, other: Prediction | None, other_name: str | None,
            truth: tuple[float, float] | None) -> tuple[list[dict], list[dict]]:
    """The predicted point(s), the line between the two variants' answers, the EXIF truth and the error; each
    drawn on the world copy nearest the primary answer (tooltips keep the true longitude)."""
    ref = primary.lon
    points = [{"at": [primary.lat, primary.lon], "colour": PRED_COLOURS.get(primary_name, "#d62728"),
               "className": f"geosurge-pred geosurge-pred-{primary_name}",
               "tip": f"prediction ({primary_name}): {primary.lat:.4f}, {primary.lon:.4f} · {_chance(primary)}"}]
    lines = []
    if other is not None:
        d = float(haversine_km(primary.lat, primary.lon, other.lat, other.lon))
        where = [other.lat, _near(other.lon, ref)]
        points.append({"at": where, "colour": PRED_COLOURS.get(other_name or "", "#1f77b4"),
                       "className": f"geosurge-pred geosurge-pred-{other_name}",
                       "tip": f"prediction ({other_name}): {other.lat:.4f}, {other.lon:.4f} · {_chance(other)}"})
        lines.append({"path": [[primary.lat, primary.lon], where], "colour": "#555", "dash": "6 6",
                      "className": "geosurge-between", "tip": f"{d:,.0f} km between the two predictions"})
    if truth is not None:
        err = float(haversine_km(primary.lat, primary.lon, truth[0], truth[1]))
        where = [truth[0], _near(truth[1], ref)]
        points.append({"at": where, "colour": TRUTH_COLOUR, "className": "geosurge-truth",
                       "tip": f"EXIF GPS (true location) · error {err:,.0f} km"})
        lines.append({"path": [[primary.lat, primary.lon], where], "colour": TRUTH_COLOUR, "dash": None,
                      "className": "geosurge-error", "tip": f"error {err:,.0f} km"})
    return points, lines


def _fit_bounds(primary: Prediction, hierarchy: Hierarchy, points: list[dict]) -> list[list[float]]:
    """What the map zooms to: the points and the fine cells holding the answer (the top cells by product score
    may sit on several continents; coarse cells span continents), or the top cells of the 3 finest levels."""
    n = len(primary.levels)
    cells = ([(c.level - 1, c.index) for c in primary.chain[-3:]] if primary.chain else
             [(k, c.index) for k in range(max(0, n - 3), n) for c in primary.levels[k]])
    rings = [cell_rings(hierarchy.levels[k]).ring(i, primary.lon) for k, i in cells]
    pts = np.concatenate(rings + [np.array([p["at"] for p in points], dtype=np.float64)])
    return [[float(pts[:, 0].min()), float(pts[:, 1].min())], [float(pts[:, 0].max()), float(pts[:, 1].max())]]


def _tiles(show: bool) -> dict:
    p = xyzservices.providers.OpenStreetMap.Mapnik
    return {"url": p.build_url(), "attribution": p.html_attribution, "maxZoom": p.get("max_zoom", 19), "show": show,
            "name": "OpenStreetMap tiles (online)"}


_RINGS = "__GEOSURGE_RINGS__"


def map_spec(primary: Prediction, hierarchy: Hierarchy, primary_name: str, other: Prediction | None = None,
             other_name: str | None = None, truth: tuple[float, float] | None = None,
             online_tiles: bool = False) -> tuple[dict, list[str]]:
    """Everything one answer's map shows, as the JSON document ``geosurge-map.js`` draws, and the cell rings
    it refers to by index (JSON text, cached per cell: see :func:`spec_json`)."""
    rings: list[str] = []
    regions = _region_layers(primary, hierarchy, rings)
    levels = _level_layers(primary, hierarchy, rings)
    points, lines = _points(primary, primary_name, other, other_name, truth)
    legend = legend_entries(primary_name, other_name if other is not None else None, truth is not None,
                            len(primary.levels), {r["q"]: r["name"] for r in regions}, online_tiles)
    spec = {
        "basemap": {"url": asset_url("vendor/world-atlas-2.0.2/countries-50m.json"), "land": LAND, "sea": SEA,
                    "border": BORDER, "name": "land, sea, borders (Natural Earth, offline)",
                    "copies": [0] if abs(primary.lon) < 90 else [0, 360 if primary.lon > 0 else -360]},
        "tiles": _tiles(online_tiles),
        "rings": _RINGS, "regions": regions, "levels": levels, "points": points, "lines": lines,
        "legend": {"className": "geosurge-legend", "entries": legend},
        "fit": {"bounds": _fit_bounds(primary, hierarchy, points), "topLeft": FIT_TOP_LEFT, "bottomRight": FIT_BOTTOM_RIGHT},
    }
    return spec, rings


def spec_json(spec: dict, rings: list[str]) -> str:
    """The document as JSON, the rings' cached text spliced in as it is; "<" escaped so that no tooltip can
    close the page's <script>."""
    text = json.dumps(spec, separators=(",", ":")).replace("<", "\\u003c")
    return text.replace(json.dumps(_RINGS), "[" + ",".join(rings) + "]", 1)


class AnswerLayers(MacroElement):
    """Hands the map and the answer's JSON to ``GeoSurgeMap.draw`` (the JSON is spliced in after rendering)."""

    PLACEHOLDER = "__GEOSURGE_SPEC__"
    _template = Template("""
        {% macro script(this, kwargs) %}
            GeoSurgeMap.draw({{ this._parent.get_name() }}, __GEOSURGE_SPEC__);
        {% endmacro %}
    """)

    def __init__(self):
        super().__init__()
        self._name = "AnswerLayers"


@lru_cache(maxsize=1)
def _page() -> tuple[str, str]:
    """The map page, rendered by Folium once (it is the same for every answer: the view is fitted to the
    answer by the script) and escaped for ``srcdoc``: the text before and after the answer's JSON."""
    m = folium.Map(location=[20, 0], zoom_start=2, tiles=None, world_copy_jump=True)
    m.default_js, m.default_css = [], []  # linked by _head, from the cached assets
    AnswerLayers().add_to(m)
    head, sep, rest = m.get_root().render().partition("<head>")
    before, placeholder, after = (head + sep + _head() + rest).partition(AnswerLayers.PLACEHOLDER)
    if not placeholder:
        raise RuntimeError("folium did not render the map script (its placeholder is missing)")
    return html.escape(before, quote=True), html.escape(after, quote=True)


def prediction_map(
    primary: Prediction,
    hierarchy: Hierarchy,
    primary_name: str,
    other: Prediction | None = None,
    other_name: str | None = None,
    truth: tuple[float, float] | None = None,
    height: int = 520,
    online_tiles: bool = False,
) -> str:
    """An ``<iframe>`` with the map: per level a toggleable layer of its top cells, coloured by level,
    with the product score in the tooltip; the 50 % and 90 % credible regions; the predicted point(s); the
    EXIF truth and the errors; a collapsible legend; the offline basemap, OpenStreetMap tiles on top when
    ``online_tiles``. Its static assets are fetched relative to the page (:data:`ASSET_ROUTE`)."""
    spec = spec_json(*map_spec(primary, hierarchy, primary_name, other, other_name, truth, online_tiles))
    before, after = _page()
    return (f'<iframe class="geosurge-map" title="prediction map" srcdoc="{before}{html.escape(spec, quote=True)}{after}" '
            f'style="width:100%;height:{height}px;border:0;border-radius:8px"></iframe>')
