// The map: areas outlined (by the registry's boundary, or the hull of their sites without one),
// sites as markers coloured by the worst state of their devices, clustered at city zoom (a
// cluster takes its worst member's colour). A tile layer is drawn
// only when the fleet's settings name a tile server; without one the map still shows areas
// and sites on a plain background, which is what a closed network gets.
/* global L */

import { h, clear, chip } from "./dom.js";
import { t, tData } from "./i18n.js";

const RANK = { ok: 0, unknown: 1, offline: 2, fault: 3, alarm: 4 };
const DEFAULT_VIEW = [[10.7769, 106.7009], 12];  // Ho Chi Minh City, when no site has a position

function worst(states) {
  return states.reduce((w, s) => (RANK[s] > RANK[w] ? s : w), "ok");
}

function siteIcon(state, label) {
  return L.divIcon({
    className: "", iconSize: [28, 28], iconAnchor: [14, 14],
    html: `<span class="pin state-${state}" aria-hidden="true">${label}</span>`,
  });
}

function siteCard(site) {
  return h("div.site-card", {},
    h("strong", {}, site.name), h("div.muted", {}, site.area),
    h("ul.device-list", {}, site.devices.map((d) => h("li", {},
      chip("state", d.state, t(`state.${d.state}`)), " ",
      h("a", { href: `#/device/${d.id}` }, d.name || d.key), " ",
      h("span.muted", {}, tData("class", d.device_class))))));
}

export function mountMap(root, ctx) {
  const mapEl = h("div.map", { id: "map", role: "region", "aria-label": t("map.title") });
  const legend = h("ul.legend", { "aria-label": t("map.legend") },
    ["alarm", "fault", "offline", "unknown", "ok"].map((s) => h("li", {}, chip("state", s, t(`state.${s}`)))));
  const siteList = h("div.site-list");
  root.append(h("section.mapview", { "aria-labelledby": "map-title" },
    h("h2.visually-hidden", { id: "map-title" }, t("map.title")),
    ctx.me.tile_url ? null : h("p.note", {}, t("map.no_tiles")),
    legend, mapEl, siteList));

  // Zoom limits are the map's own (a tile layer would give them; clustering needs them).
  const map = L.map(mapEl, { zoomControl: true, minZoom: 3, maxZoom: 19, attributionControl: Boolean(ctx.me.tile_url) });
  if (ctx.me.tile_url) {
    map.attributionControl.setPrefix(false);
    L.tileLayer(ctx.me.tile_url, { attribution: ctx.me.tile_attribution || "", maxZoom: 19 }).addTo(map);
  }
  window.__dashboardMap = map;  // for the browser tests and a curious operator's console
  const outlines = L.layerGroup().addTo(map);
  window.__dashboardOutlines = outlines;
  const clusters = L.markerClusterGroup({
    disableClusteringAtZoom: 16, showCoverageOnHover: false,
    iconCreateFunction: (cluster) => {
      const state = worst(cluster.getAllChildMarkers().map((m) => m.options.state));
      return L.divIcon({
        className: "", iconSize: [40, 40],
        html: `<span class="pin cluster state-${state}">${cluster.getChildCount()}</span>`,
      });
    },
  }).addTo(map);
  let fitted = false;

  function draw() {
    if (!fitted) {
      // The first view, before anything is drawn (the cluster layer places markers by the
      // map's zoom): every site and every boundary the registry has.
      fitted = true;
      const bounds = L.latLngBounds(ctx.siteList.filter((s) => s.lat !== null && s.lon !== null).map((s) => [s.lat, s.lon]));
      for (const area of ctx.areas) if (area.outline) bounds.extend(L.geoJSON(area.outline).getBounds());
      if (bounds.isValid()) map.fitBounds(bounds, { padding: [30, 30], maxZoom: 15 });
      else map.setView(...DEFAULT_VIEW);
    }
    outlines.clearLayers();
    clusters.clearLayers();
    for (const area of ctx.areas) {
      // The registry's own boundary (GeoJSON, [lon, lat]) when it has one, drawn solid; else
      // the hull of the area's sites ([lat, lon]), dashed: a guess, and it looks like one.
      let layer = null;
      if (area.outline) {
        // (The options reach the polygons L.geoJSON builds, className included.)
        layer = L.geoJSON(area.outline, { color: "#37474f", weight: 2, fillOpacity: 0.05,
          interactive: false, className: "area-outline area-registry" });
      } else if (area.hull.length >= 3) {
        layer = L.polygon(area.hull, { color: "#37474f", weight: 2, dashArray: "6 4", fillOpacity: 0.04,
          interactive: false, className: "area-outline area-hull" });
      }
      if (layer) {
        layer.areaId = area.id;  // for the browser tests: which area a drawn path belongs to
        layer.bindTooltip(h("span", {}, area.name), {  // an element: a name is text, never markup
          permanent: true, direction: "center", className: "area-label" }).addTo(outlines);
      }
    }
    for (const site of ctx.siteList) {
      if (site.lat === null || site.lon === null) continue;
      const marker = L.marker([site.lat, site.lon], {
        icon: siteIcon(site.state, site.devices.length), state: site.state,
        title: `${site.name}: ${t(`state.${site.state}`)}`, alt: site.name, keyboard: true,
      });
      marker.bindPopup(() => siteCard(site));
      clusters.addLayer(marker);
    }
    // The same facts as a list: for the keyboard, a screen reader and a phone held in one hand.
    clear(siteList).append(
      h("h3", {}, t("map.devices", { n: ctx.siteList.reduce((n, s) => n + s.devices.length, 0) })),
      h("ul.sites", {}, [...ctx.siteList].sort((a, b) => RANK[b.state] - RANK[a.state]).map((s) => h("li", {},
        chip("state", s.state, t(`state.${s.state}`)), " ", h("strong", {}, s.name), " · ", s.area,
        h("ul.device-list", {}, s.devices.filter((d) => d.state !== "ok").map((d) => h("li", {},
          h("a", { href: `#/device/${d.id}` }, d.name || d.key), " ", chip("state", d.state, t(`state.${d.state}`)))))))),
      ctx.unsited.length ? [h("h3", {}, t("map.unsited")), h("ul.device-list", {}, ctx.unsited.map((d) => h("li", {},
        chip("state", d.state, t(`state.${d.state}`)), " ", h("a", { href: `#/device/${d.id}` }, d.name || d.key))))] : null);
  }

  draw();
  setTimeout(() => map.invalidateSize(), 0);
  ctx.onRegistry = draw;
  return () => map.remove();
}
