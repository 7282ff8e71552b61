"""The prediction map: top cells of every hierarchy level as S2 polygons, predictions, truth (Folium).

Leaflet is inlined from ``geosurge/app/assets/vendor`` instead of a CDN, so the map renders offline (and in the
browser tests); only the background tiles need the internet.
"""
from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path

import folium
import xyzservices
from branca.element import MacroElement
from jinja2 import Template

from ..geo.distance import haversine_km
from ..geo.hierarchy import Hierarchy
from ..model.variants import FUSION, RGB, VARIANTS
from ..predictor import Prediction

LEAFLET = Path(__file__).resolve().parent / "assets" / "vendor" / "leaflet-1.9.4"
#: coarse -> fine; distinct hues that stay readable over a map
LEVEL_COLOURS = ["#4e79a7", "#59a14f", "#edc948", "#f28e2b", "#e15759", "#b07aa1", "#76005f"]
PRED_COLOURS = {FUSION: "#d62728", RGB: "#1f77b4"}
TRUTH_COLOUR = "#2ca02c"


@lru_cache(maxsize=1)
def _leaflet_escaped() -> str:
    """Leaflet's CSS and JS as a <head> block, already escaped for the iframe's srcdoc attribute
    (150 kB: escaping it once instead of per map)."""
    js, css = LEAFLET / "leaflet.js", LEAFLET / "leaflet.css"
    if not js.is_file():
        raise FileNotFoundError(f"Leaflet is missing from {LEAFLET} (it ships with the package)")
    return html.escape(f"<style>{css.read_text()}</style><script>{js.read_text()}</script>", quote=True)


def _ring(latlon, centre_lon: float = 0.0) -> list[tuple[float, float]]:
    """A cell boundary (lat, lon) as Leaflet should draw it: longitudes unwrapped along the ring (cells
    across the antimeridian), and a ring that winds once around a pole (a polar S2 face, or any cell
    holding a pole) closed over that pole, else it would be drawn as a thin band along its boundary.
    The ring is shifted by whole turns to the world copy around ``centre_lon`` (the map's centre)."""
    import numpy as np

    lat = np.asarray(latlon[:, 0], dtype=np.float64)
    lon = np.degrees(np.unwrap(np.radians(latlon[:, 1])))
    winding = lon[-1] - lon[0] + (lon[0] - lon[-1] + 180.0) % 360.0 - 180.0  # incl. the closing edge
    if abs(winding) > 180.0:
        pole = 90.0 if lat.mean() > 0 else -90.0
        end = lon[0] + winding
        lat, lon = np.r_[lat, lat[0], pole, pole], np.r_[lon, end, end, lon[0]]
    lon = lon - 360.0 * np.round(((lon.min() + lon.max()) / 2 - centre_lon) / 360.0)
    return [(float(a), float(b)) for a, b in zip(lat, lon)]


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


class CellLayer(folium.map.Layer):
    """One toggleable layer of S2 cell polygons, each with its own style and tooltip.

    Drawn by one script from a JSON list instead of a ``folium.Polygon`` + ``folium.Tooltip`` per cell:
    branca compiles every rendered element as a Jinja template again, which cost ~100 ms per map
    for the 35 cells of 7 levels. The payload sits in a raw block so that second compile only copies it.
    """

    _template = Template("""
        {% macro script(this, kwargs) %}
            var {{ this.get_name() }} = L.featureGroup(
                {{ "{% raw %}" }}{{ this.payload }}{{ "{% endraw %}" }}.map(function (c) {
                    return L.polygon(c.ring, c.style).bindTooltip(c.tip, {sticky: true});
                })
            );
        {% endmacro %}
    """)

    def __init__(self, cells: list[dict], name: str, show: bool = True):
        super().__init__(name=name, overlay=True, control=True, show=show)
        self._name = "CellLayer"
        # "<" escaped so a tooltip can never close the page's <script>; "{%" so nothing can end the raw block.
        self.payload = json.dumps(cells, separators=(",", ":")).replace("<", "\\u003c").replace("{%", "{\\u0025")


#: at most this many finest cells are drawn per credible region (a flat posterior spreads 90 % over most cells)
MAX_REGION_CELLS = 400
REGION_COLOURS = {50: "#7b3294", 90: "#c2a5cf"}


def credible_layers(pred: Prediction, hierarchy: Hierarchy) -> list[CellLayer]:
    """The smallest sets of finest cells holding 50 % and 90 % of the posterior, one toggleable layer each."""
    layers = []
    polys = hierarchy.finest.polygons(2)
    for q in sorted(pred.credible, reverse=True):  # 90 % below 50 %
        cells = pred.credible[q]
        colour = REGION_COLOURS.get(q, "#888888")
        drawn = [{"ring": [[round(a, 4), round(b, 4)] for a, b in _ring(polys[i], pred.lon)],
                  "style": {"color": colour, "weight": 0.5, "fill": True, "fillColor": colour, "fillOpacity": 0.25,
                            "className": f"geosurge-region geosurge-region-{q}"},
                  "tip": f"inside the {q} % credible region ({len(cells)} cells)"} for i in cells[:MAX_REGION_CELLS]]
        more = f"{MAX_REGION_CELLS} of {len(cells)} cells drawn" if len(cells) > MAX_REGION_CELLS else f"{len(cells)} cells"
        layers.append(CellLayer(drawn, f"{q} % credible region ({more})"))
    return layers


class Legend(MacroElement):
    """The map's colour legend, a Leaflet control in the bottom-right corner (the map keeps points clear of it)."""

    _template = Template("""
        {% macro script(this, kwargs) %}
            var {{ this.get_name() }} = L.control({position: "bottomright"});
            {{ this.get_name() }}.onAdd = function () {
                var div = L.DomUtil.create("div", "geosurge-legend");
                div.innerHTML = {{ this.html|tojson }};
                L.DomEvent.disableClickPropagation(div);
                return div;
            };
            {{ this.get_name() }}.addTo({{ this._parent.get_name() }});
        {% endmacro %}
    """)

    def __init__(self, entries: list[tuple[str, str, str]]):
        super().__init__()
        self._name = "Legend"
        rows = []
        for kind, colour, label in entries:
            mark = (f'<span style="display:inline-block;width:11px;height:11px;border-radius:50%;background:{colour};'
                    'border:2px solid #fff;box-shadow:0 0 0 1px #666"></span>' if kind == "point" else
                    f'<span style="display:inline-block;width:13px;height:9px;background:{colour};opacity:.75;'
                    f'border:1px solid {colour}"></span>')
            rows.append(f'<div style="white-space:nowrap;line-height:16px">{mark} {html.escape(label)}</div>')
        self.html = ('<div style="background:rgba(255,255,255,.92);padding:5px 8px;border-radius:6px;font:11px/1.3 sans-serif;'
                     'box-shadow:0 1px 4px rgba(0,0,0,.35)">' + "".join(rows) + "</div>")


class FitView(MacroElement):
    """Fit the map to ``bounds`` now and again whenever its frame is resized: Gradio may create the map's
    iframe while its box is still hidden (0 x 0), and a fit computed then leaves the points off screen."""

    _template = Template("""
        {% macro script(this, kwargs) %}
            (function (map) {
                var bounds = {{ this.bounds|tojson }};
                var options = {paddingTopLeft: {{ this.top_left|tojson }}, paddingBottomRight: {{ this.bottom_right|tojson }}, animate: false};
                function fit() { map.invalidateSize(false); map.fitBounds(bounds, options); }
                fit();
                window.addEventListener("resize", fit);
            })({{ this._parent.get_name() }});
        {% endmacro %}
    """)

    def __init__(self, bounds, top_left, bottom_right):
        super().__init__()
        self._name = "FitView"
        self.bounds, self.top_left, self.bottom_right = bounds, list(top_left), list(bottom_right)


#: Padding (px) that keeps the fitted points clear of the map's corners: the zoom buttons and the layer
#: button across the top, the legend on the right.
FIT_TOP_LEFT, FIT_BOTTOM_RIGHT = (20, 64), (150, 20)


def _legend_name(variant: str) -> str:
    return f"{VARIANTS[variant].label} prediction" if variant in VARIANTS else variant


def legend_entries(primary_name: str, other_name: str | None, truth: bool, levels: int) -> list[tuple[str, str, str]]:
    entries = [("point", PRED_COLOURS.get(primary_name, "#d62728"), _legend_name(primary_name))]
    if other_name:
        entries.append(("point", PRED_COLOURS.get(other_name, "#1f77b4"), _legend_name(other_name)))
    if truth:
        entries.append(("point", TRUTH_COLOUR, "true location (EXIF GPS)"))
    entries += [("cell", _colour(k), f"level {k + 1} cells" + (" (coarsest)" if k == 0 else " (finest)" if k == levels - 1 else ""))
                for k in range(levels)]
    return entries


def prediction_map(
    primary: Prediction,
    hierarchy: Hierarchy,
    primary_name: str,
    other: Prediction | None = None,
    other_name: str | None = None,
    truth: tuple[float, float] | None = None,
    height: int = 520,
) -> str:
    """An ``<iframe>`` with the map: per level a toggleable layer of its top cells, coloured by level,
    with the product score in the tooltip; the predicted point(s); the EXIF truth and the errors."""
    m = _base_map(primary)
    # What the map zooms to: the points and the fine cells holding the answer (the top cells by product score
    # may sit on several continents; coarse cells span continents).
    bounds = [pt for c in primary.chain[-3:] for pt in _ring(hierarchy.levels[c.level - 1].polygons(4)[c.index], primary.lon)]
    for layer in credible_layers(primary, hierarchy):  # below the level cells, so their tooltips stay reachable
        layer.add_to(m)
    _add_level_layers(m, primary, hierarchy, bounds)
    _add_points(m, primary, primary_name, other, other_name, truth, bounds)
    # Collapsed: the expanded panel covered the truth or a prediction on about one map in ten.
    folium.LayerControl(collapsed=True).add_to(m)
    Legend(legend_entries(primary_name, other_name if other is not None else None, truth is not None,
                          len(primary.levels))).add_to(m)
    if bounds:
        lats, lons = [b[0] for b in bounds], [b[1] for b in bounds]
        FitView([[min(lats), min(lons)], [max(lats), max(lons)]], FIT_TOP_LEFT, FIT_BOTTOM_RIGHT).add_to(m)
    return _iframe(m, height)


def _base_map(primary: Prediction) -> folium.Map:
    m = folium.Map(location=[primary.lat, primary.lon], zoom_start=3, tiles=None, world_copy_jump=True)
    m.default_js, m.default_css = [], []  # no CDN: Leaflet is inlined into the rendered page (_iframe)
    # The provider object rather than its name or URL: folium looks any string up in xyzservices'
    # whole catalogue, ~5 ms per map.
    folium.TileLayer(xyzservices.providers.OpenStreetMap.Mapnik, name="OpenStreetMap (online)", control=False).add_to(m)
    return m


def _add_level_layers(m: folium.Map, primary: Prediction, hierarchy: Hierarchy, bounds: list) -> None:
    """Per level a toggleable layer of its top cells, with the product score in each tooltip."""
    for k, cells in enumerate(primary.levels):
        drawn = []
        for rank, c in enumerate(cells):
            ring = _ring(hierarchy.levels[k].polygons(4)[c.index], primary.lon)
            if k >= len(primary.levels) - 3 and not primary.chain:
                bounds.extend(ring)
            tip = (f"<b>level {k + 1}</b> · #{rank + 1} · cell {html.escape(c.token)}<br>"
                   f"product score {c.score:.4g}<br>cell centre {c.lat:.3f}, {c.lon:.3f}")
            style = {"color": _colour(k), "weight": 2 if rank == 0 else 1, "fill": True, "fillColor": _colour(k),
                     "fillOpacity": round(0.08 + 0.3 * min(1.0, c.score ** 0.5), 3),
                     "className": f"geosurge-cell geosurge-level-{k + 1}"}
            drawn.append({"ring": [[round(a, 5), round(b, 5)] for a, b in ring], "style": style, "tip": tip})
        CellLayer(drawn, f"level {k + 1}: top {len(cells)} cells ({len(hierarchy.levels[k])} in all)").add_to(m)


def _add_points(m: folium.Map, primary: Prediction, primary_name: str, other: Prediction | None, other_name: str | None,
                truth: tuple[float, float] | None, bounds: list) -> None:
    """The predicted point(s), the line between the two variants' answers, the EXIF truth and the error."""
    _point(m, primary.lat, primary.lon, primary.lon, PRED_COLOURS.get(primary_name, "#d62728"),
           f"geosurge-pred geosurge-pred-{primary_name}",
           f"prediction ({primary_name}): {primary.lat:.4f}, {primary.lon:.4f} · {_chance(primary)}", bounds)
    if other is not None:
        d = float(haversine_km(primary.lat, primary.lon, other.lat, other.lon))
        where = _point(m, other.lat, other.lon, primary.lon, PRED_COLOURS.get(other_name or "", "#1f77b4"),
                       f"geosurge-pred geosurge-pred-{other_name}",
                       f"prediction ({other_name}): {other.lat:.4f}, {other.lon:.4f} · {_chance(other)}", bounds)
        folium.PolyLine([[primary.lat, primary.lon], where], color="#555", weight=2, dash_array="6 6",
                        tooltip=f"{d:,.0f} km between the two predictions", class_name="geosurge-between").add_to(m)
    if truth is not None:
        err = float(haversine_km(primary.lat, primary.lon, truth[0], truth[1]))
        where = _point(m, truth[0], truth[1], primary.lon, TRUTH_COLOUR, "geosurge-truth",
                       f"EXIF GPS (true location) · error {err:,.0f} km", bounds)
        folium.PolyLine([[primary.lat, primary.lon], where], color=TRUTH_COLOUR, weight=2,
                        tooltip=f"error {err:,.0f} km", class_name="geosurge-error").add_to(m)


def _point(m: folium.Map, lat: float, lon: float, ref_lon: float, colour: str, cls: str, tip: str, bounds: list) -> list[float]:
    """A marker drawn on the copy of the world nearest ``ref_lon`` (the tooltip keeps the true longitude)."""
    where = [lat, _near(lon, ref_lon)]
    folium.CircleMarker(where, radius=9, color="white", weight=2, fill=True, fill_color=colour,
                        fill_opacity=1.0, tooltip=tip, class_name=cls).add_to(m)
    bounds.append(tuple(where))
    return where


def _iframe(m: folium.Map, height: int) -> str:
    # Spliced in after rendering: as a folium Element the 150 kB of Leaflet would be compiled as a
    # Jinja template on every request.
    head, sep, rest = m.get_root().render().partition("<head>")
    doc = html.escape(head + sep, quote=True) + _leaflet_escaped() + html.escape(rest, quote=True)
    return (f'<iframe class="geosurge-map" title="prediction map" srcdoc="{doc}" '
            f'style="width:100%;height:{height}px;border:0;border-radius:8px"></iframe>')
