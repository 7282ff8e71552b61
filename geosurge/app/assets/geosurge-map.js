// GeoSURGE's prediction map: draws one answer (the JSON document built by geosurge/app/geomap.py) on a
// Leaflet map. Static and cached: only the document changes from answer to answer.
(function () {
  "use strict";

  // Natural Earth's rings are cut at the antimeridian (Chukotka, Fiji) and Antarctica's winds around the south
  // pole; Leaflet joins consecutive points the short way on its flat map, so such a ring would be drawn as a
  // band across the whole world. Longitudes are unwrapped along each ring, and a ring that winds once around a
  // pole is closed over it (as geomap._rings does for S2 cells).
  function unwrap(ring) {
    var shift = 0, prev = null;
    return ring.map(function (c) {
      if (prev !== null) {
        var d = c[0] + shift - prev;
        if (d > 180) shift -= 360; else if (d < -180) shift += 360;
      }
      prev = c[0] + shift;
      return [prev, c[1]];
    });
  }

  function closeOverPole(ring) {
    var a = ring[0], b = ring[ring.length - 1];
    if (Math.abs(b[0] - a[0]) < 180) return ring;
    var pole = ring.reduce(function (s, c) { return s + c[1]; }, 0) > 0 ? 90 : -90;
    return ring.concat([[b[0], pole], [a[0], pole], [a[0], a[1]]]);
  }

  function tidy(geometry) {
    var g = geometry.geometry || geometry;
    var ring = function (r) { return closeOverPole(unwrap(r)); };
    if (g.type === "Polygon") g.coordinates = g.coordinates.map(ring);
    else if (g.type === "MultiPolygon") g.coordinates = g.coordinates.map(function (p) { return p.map(ring); });
    else if (g.type === "LineString") g.coordinates = unwrap(g.coordinates);
    else if (g.type === "MultiLineString") g.coordinates = g.coordinates.map(unwrap);
    else if (g.type === "FeatureCollection") g.features.forEach(tidy);
    else if (g.type === "GeometryCollection") g.geometries.forEach(tidy);
    return geometry;
  }

  // The offline basemap: sea as the map's background, Natural Earth land (with its coastline) and borders
  // on a canvas in a pane beneath the tiles, so OpenStreetMap tiles cover it wherever they load.
  function basemap(map, spec) {
    map.getContainer().style.background = spec.sea;
    var pane = map.createPane("geosurge-basemap");
    pane.style.zIndex = 150;
    pane.style.pointerEvents = "none";
    var group = L.layerGroup().addTo(map);
    fetch(spec.url).then(function (r) { return r.json(); }).then(function (world) {
      var renderer = L.canvas({pane: "geosurge-basemap", padding: 0.5});
      var land = tidy(topojson.feature(world, world.objects.land));
      var borders = tidy(topojson.mesh(world, world.objects.countries, function (a, b) { return a !== b; }));
      spec.copies.forEach(function (dx) {
        var opts = {pane: "geosurge-basemap", renderer: renderer, interactive: false,
                    coordsToLatLng: function (c) { return L.latLng(c[1], c[0] + dx); }};
        group.addLayer(L.geoJSON(land, L.extend({style: {stroke: true, color: spec.border, weight: 0.7,
          fillColor: spec.land, fillOpacity: 1}}, opts)));
        group.addLayer(L.geoJSON(borders, L.extend({style: {color: spec.border, weight: 0.6, fill: false}}, opts)));
      });
      map.getContainer().classList.add("geosurge-basemap-ready");
      if (window.performance && performance.mark) performance.mark("geosurge-basemap-ready");
    });
    return group;
  }

  function regionLayer(rings, region) {
    var polys = region.take.map(function (i) { return [rings[i]]; });
    return L.polygon(polys, L.extend({fill: true}, region.style)).bindTooltip(region.tip, {sticky: true});
  }

  function levelLayer(rings, level) {
    return L.featureGroup(level.cells.map(function (c) {
      return L.polygon(rings[c[0]], {color: level.colour, weight: c[2], fill: true, fillColor: level.colour,
                                     fillOpacity: c[3], className: level.className}).bindTooltip(c[1], {sticky: true});
    }));
  }

  function legend(map, spec) {
    var control = L.control({position: "bottomright"});
    control.onAdd = function () {
      var div = L.DomUtil.create("div", spec.className);
      var box = L.DomUtil.create("details", "", div);
      var touched = false;
      // open where there is room, folded (one tap away) on a phone-sized map; decided again when the frame
      // gets its size (it may be created hidden, 0 x 0) until the visitor opens or folds it
      control.fold = function () { if (!touched) box.open = map.getSize().x >= 560; };
      control.fold();
      box.style.cssText = "background:rgba(255,255,255,.92);padding:4px 8px;border-radius:6px;" +
                          "font:11px/1.3 sans-serif;box-shadow:0 1px 4px rgba(0,0,0,.35);max-height:60vh;overflow:auto";
      var head = L.DomUtil.create("summary", "", box);
      head.textContent = "Legend";
      L.DomEvent.on(head, "click", function () { touched = true; });
      head.style.cssText = "cursor:pointer;font-weight:bold";
      var rows = L.DomUtil.create("div", "", box);
      spec.entries.forEach(function (e) {
        var row = L.DomUtil.create("div", "", rows);
        row.style.cssText = "white-space:nowrap;line-height:16px";
        var mark = L.DomUtil.create("span", "", row);
        mark.style.cssText = "display:inline-block;vertical-align:middle;margin-right:4px;background:" + e[1] + ";" +
          (e[0] === "point" ? "width:11px;height:11px;border-radius:50%;border:2px solid #fff;box-shadow:0 0 0 1px #666"
                            : "width:13px;height:9px;border:1px solid #888");
        row.appendChild(document.createTextNode(e[2]));
      });
      L.DomEvent.disableClickPropagation(div);
      L.DomEvent.disableScrollPropagation(div);
      return div;
    };
    control.addTo(map);
    return control;
  }

  // Fit now and again whenever the frame is resized: Gradio may create the map's iframe while its box is
  // still hidden (0 x 0), and a fit computed then leaves the points off screen. The legend's width is kept
  // clear on the right.
  function fit(map, spec, legendControl) {
    function go() {
      map.invalidateSize(false);
      legendControl.fold();
      var width = legendControl.getContainer().offsetWidth;
      map.fitBounds(spec.bounds, {paddingTopLeft: spec.topLeft, animate: false,
                                  paddingBottomRight: [spec.bottomRight[0] + width, spec.bottomRight[1]]});
    }
    go();
    window.addEventListener("resize", go);
  }

  function draw(map, spec) {
    var overlays = {};
    overlays[spec.basemap.name] = basemap(map, spec.basemap);
    var tiles = L.tileLayer(spec.tiles.url, {attribution: spec.tiles.attribution, maxZoom: spec.tiles.maxZoom});
    if (spec.tiles.show) tiles.addTo(map);
    overlays[spec.tiles.name] = tiles;
    map.attributionControl.addAttribution("Natural Earth");
    spec.regions.forEach(function (r) { overlays[r.name] = regionLayer(spec.rings, r).addTo(map); });
    spec.levels.forEach(function (l) { overlays[l.name] = levelLayer(spec.rings, l).addTo(map); });
    spec.lines.forEach(function (l) {
      L.polyline(l.path, {color: l.colour, weight: 2, dashArray: l.dash, className: l.className})
        .bindTooltip(l.tip).addTo(map);
    });
    spec.points.forEach(function (p) {
      L.circleMarker(p.at, {radius: 9, color: "white", weight: 2, fill: true, fillColor: p.colour, fillOpacity: 1,
                            className: p.className}).bindTooltip(p.tip).addTo(map);
    });
    // collapsed: the expanded panel covered the truth or a prediction on about one map in ten
    L.control.layers(null, overlays, {collapsed: true}).addTo(map);
    fit(map, spec.fit, legend(map, spec.legend));
    window.geosurgeMap = map;  // for debugging and the browser test
  }

  window.GeoSurgeMap = {draw: draw};
})();
