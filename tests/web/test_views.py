"""The views' own promises, in the browser: keyboard sign-in and named controls, the board's
area and class filters, the map's clusters at city zoom, its tile layer drawn only when the
settings name one, and its area outlines (the registry's boundary, else the hull of the sites)."""

from __future__ import annotations

from typing import Any

import httpx

from fleet.web.state import hull, worst_state
from tests.web.conftest import open_page
from tests.web.stack import PASSWORDS, FleetStack

#: Every form control must have a name a screen reader can say.
UNNAMED_CONTROLS = """() => [...document.querySelectorAll("input, select, button, a[href]")]
  .filter((el) => el.offsetParent !== null)
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
                  && !el.textContent.trim() && !el.getAttribute("title")
                  && !el.getAttribute("placeholder"))
  .map((el) => el.outerHTML.slice(0, 120))"""


def test_a_dispatcher_signs_in_and_reaches_every_view_with_the_keyboard_alone(
        browser: Any, stack: FleetStack) -> None:
    page = open_page(browser, stack)
    page.keyboard.type("pccc")  # the username field has the focus
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORDS["pccc"])
    page.keyboard.press("Enter")
    page.wait_for_selector("#logout")
    for view, ready in (("map", ".leaflet-marker-icon"), ("health", "section.health table"),
                        ("alarms", "section.board")):
        link = page.locator(f"nav a[href='#/{view}']")
        link.focus()
        page.keyboard.press("Enter")
        page.wait_for_selector(ready)
        assert page.evaluate(UNNAMED_CONTROLS) == [], view
    page.context.close()


def test_the_board_filters_by_ward_and_by_class(browser: Any, stack: FleetStack) -> None:
    flood = stack.alarm("gw-sg", "flood-2", "flood", "stage1", severity="warning")
    air = stack.alarm("gw-bt", "air-1", "air", "pm25_high", severity="warning")
    rows = stack.wait_for("admin", "/alarms?open_only=true",
                          lambda r: {flood, air} <= {a["alarm_key"] for a in r})
    ids = {a["alarm_key"]: a["id"] for a in rows}
    page = open_page(browser, stack, user="admin")
    for key in (flood, air):
        page.wait_for_selector(f"article.alarm[data-alarm-id='{ids[key]}']", state="attached")

    page.select_option("#filter-area", label="\u00a0\u00a0Phường Cầu Ông Lãnh")
    shown = page.eval_on_selector_all("article.alarm", "els => els.map(e => +e.dataset.alarmId)")
    assert shown == [ids[flood]]

    page.select_option("#filter-area", "")
    page.select_option("#filter-class", "air")
    classes = page.eval_on_selector_all("article.alarm",
                                        "els => els.map(e => e.dataset.deviceClass)")
    assert ids[air] in page.eval_on_selector_all(
        "article.alarm", "els => els.map(e => +e.dataset.alarmId)")
    assert set(classes) == {"air"}
    page.context.close()


def test_the_map_draws_tiles_only_from_a_configured_tile_server(browser: Any,
                                                               stack: FleetStack) -> None:
    page = open_page(browser, stack, user="admin", path="#/map")
    page.goto(f"{stack.url}/ui/#/map")
    page.wait_for_selector(".leaflet-marker-icon")
    assert page.locator(".leaflet-tile").count() == 0
    page.context.close()

    # A tile server on the closed network (here: an image the fleet itself serves).
    tiles = f"{stack.url}/ui/vendor/leaflet/dist/images/layers.png?z={{z}}&x={{x}}&y={{y}}"
    stack.settings.dashboard_tile_url = tiles
    try:
        page = open_page(browser, stack, user="admin", path="#/map")
        page.wait_for_selector(".leaflet-tile-loaded")
        assert any("layers.png?z=" in url for url in page.requests)
        assert page.locator("p.note").count() == 0
        page.context.close()
    finally:
        stack.settings.dashboard_tile_url = ""


def test_names_from_the_registry_are_shown_as_text_never_run_as_markup(
        browser: Any, stack: FleetStack) -> None:
    evil = "<img src=x onerror=\"window.__xss=1\">Khu <b>mới</b>"
    auth = {"Authorization": f"Bearer {stack.token('admin')}"}
    api = f"{stack.url}/api/v1"
    area = httpx.post(f"{api}/areas", headers=auth,
                      json={"name": evil, "parent_id": stack.area_ids["city"]}).json()
    # Three sites, so the map outlines the area (and labels the outline with its name).
    site, *_ = [httpx.post(f"{api}/sites", headers=auth, json={
        "name": evil, "area_id": area["id"], "latitude": lat, "longitude": lon}).json()
        for lat, lon in ((10.771, 106.690), (10.768, 106.688), (10.770, 106.686))]
    gateway = next(g for g in httpx.get(f"{api}/gateways", headers=auth).json()
                   if g["key"] == "gw-sg")
    device = httpx.post(f"{api}/devices", headers=auth, json={
        "gateway_id": gateway["id"], "key": "xss-1", "device_class": "air", "name": evil,
        "site_id": site["id"]}).json()
    stack.alarm("gw-sg", "xss-1", "air", "co2_high", severity="warning", location=evil)
    stack.wait_for("admin", "/alarms?class=air",
                   lambda rows: any(r["device_id"] == device["id"] for r in rows))

    page = open_page(browser, stack, user="admin")
    page.wait_for_selector(f"article.alarm a[href='#/device/{device['id']}']")
    for view in ("#/alarms", "#/map", f"#/device/{device['id']}", "#/health"):
        page.goto(f"{stack.url}/ui/{view}")
        page.wait_for_selector("main section")
        page.wait_for_load_state("networkidle")
        assert "Khu <b>mới</b>" in page.inner_text("main"), view
    assert page.evaluate("window.__xss") is None
    page.context.close()


def test_at_city_zoom_the_sites_gather_into_a_cluster_of_the_worst_state(
        browser: Any, stack: FleetStack) -> None:
    # An alarm at the theatre and a healthy pumping station: the cluster must pick the alarm.
    stack.alarm("gw-sg", "fire-4", "fire", "prealarm", severity="warning", location="Sân khấu")
    view = stack.wait_for("admin", "/dashboard/map", lambda v: any(
        s["state"] == "alarm" for s in v["sites"]))
    placed = [s for s in view["sites"] if s["lat"] is not None and s["lon"] is not None]
    states = {s["state"] for s in placed}
    assert len(states) > 1, f"every site is {states}: the cluster's colour would prove nothing"
    page = open_page(browser, stack, user="admin", path="#/map")
    page.wait_for_selector(".leaflet-marker-icon")
    # Street zoom: no clusters, one pin per site.
    page.evaluate("window.__dashboardMap.setZoom(17, { animate: false })")
    page.wait_for_function("!document.querySelector('.pin.cluster') && "
                           f"document.querySelectorAll('.leaflet-marker-icon .pin').length "
                           f"=== {len(placed)}")
    # City zoom: the five sites, a few hundred metres apart, are one cluster.
    page.evaluate("window.__dashboardMap.setZoom(12, { animate: false })")
    page.wait_for_function("document.querySelectorAll('.leaflet-marker-icon .pin').length === 1"
                           " && document.querySelector('.pin.cluster') !== null")
    cluster = page.locator(".pin.cluster")
    assert cluster.inner_text() == str(len(placed))
    assert f"state-{worst_state(s['state'] for s in placed)}" in cluster.get_attribute("class")
    assert "state-alarm" in cluster.get_attribute("class")
    page.context.close()


#: What the map's outline layer holds: per drawn polygon, its area, its class (registry or
#: hull), its rings as [lat, lon] and whether its SVG path is in the page.
DRAWN_OUTLINES = """() => { const out = [];
  window.__dashboardOutlines.eachLayer((layer) => {
    for (const poly of (layer.getLayers ? layer.getLayers() : [layer])) {
      const rings = poly.getLatLngs();
      out.push({ area: layer.areaId, cls: poly.options.className,
                 rings: rings.map((ring) => ring.map((p) => [p.lat, p.lng])),
                 drawn: Boolean(poly._path && poly._path.isConnected
                                && poly._path.getAttribute("d").length > 10) });
    } });
  return out; }"""


def _outlines_by_area(page: Any) -> dict[int, list[dict[str, Any]]]:
    drawn: dict[int, list[dict[str, Any]]] = {}
    for poly in page.evaluate(DRAWN_OUTLINES):
        drawn.setdefault(poly["area"], []).append(poly)
    return drawn


def _as_drawn(outline: dict[str, Any]) -> list[list[list[float]]]:
    """GeoJSON [lon, lat] rings as Leaflet draws them: [lat, lon], without the closing point."""
    assert outline["type"] == "Polygon"
    return [[[lat, lon] for lon, lat in ring[:-1]] for ring in outline["coordinates"]]


def test_the_map_draws_the_registrys_ward_boundaries_and_the_hull_where_there_is_none(
        browser: Any, stack: FleetStack) -> None:
    auth = {"Authorization": f"Bearer {stack.token('admin')}"}
    api = f"{stack.url}/api/v1"
    # A new neighbourhood with three sites and no boundary in the registry yet.
    area = httpx.post(f"{api}/areas", headers=auth, json={
        "name": "Khu phố Tôn Thất Tùng", "parent_id": stack.area_ids["city"]}).json()
    corners = [(10.7690, 106.6890), (10.7668, 106.6902), (10.7681, 106.6918)]
    for i, (lat, lon) in enumerate(corners):
        assert httpx.post(f"{api}/sites", headers=auth, json={
            "name": f"Tổ dân phố {i + 1}", "area_id": area["id"], "latitude": lat,
            "longitude": lon}).status_code == 201
    areas = {a["id"]: a for a in stack.get("admin", "/areas")}
    wards = {i: a for i, a in areas.items() if a["outline"] is not None}
    assert len(wards) == 3 and area["id"] not in wards

    page = open_page(browser, stack, user="admin", path="#/map")
    page.wait_for_function(f"document.querySelectorAll('path.area-registry').length === "
                           f"{len(wards)}")
    drawn = _outlines_by_area(page)
    for ward_id, ward in wards.items():
        # The registry's polygon, vertex for vertex, and no hull of the ward's sites beside it.
        [poly] = drawn[ward_id]
        assert "area-registry" in poly["cls"] and poly["drawn"], ward["name"]
        assert poly["rings"] == _as_drawn(ward["outline"]), ward["name"]
    # The neighbourhood without a boundary: the hull of its sites, dashed.
    [poly] = drawn[area["id"]]
    assert "area-hull" in poly["cls"] and poly["drawn"]
    assert poly["rings"] == [[list(p) for p in hull(corners)]]
    assert page.locator(".leaflet-tooltip.area-label", has_text="Phường Sài Gòn").count() == 1

    # Its boundary drawn through the API replaces the hull.
    outline = {"type": "Polygon", "coordinates": [[
        [106.6880, 10.7660], [106.6930, 10.7660], [106.6930, 10.7700], [106.6880, 10.7700],
        [106.6880, 10.7660]]]}
    r = httpx.put(f"{api}/areas/{area['id']}/outline", headers=auth, json={"outline": outline})
    assert r.status_code == 200, r.text
    page.reload()
    page.wait_for_function(f"document.querySelectorAll('path.area-registry').length === "
                           f"{len(wards) + 1}")
    [poly] = _outlines_by_area(page)[area["id"]]
    assert "area-registry" in poly["cls"] and poly["rings"] == _as_drawn(outline)
    page.context.close()
