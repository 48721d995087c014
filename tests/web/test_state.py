"""The dashboard's decisions without a browser: a device's one colour, a site's, the board's
order, the charted thresholds (checked against the register maps) and an area's outline."""

from __future__ import annotations

import itertools

import pytest

from fleet.web.state import (
    CHART_THRESHOLDS,
    alarm_order_key,
    area_hulls,
    device_state,
    hull,
    worst_state,
)
from hardware.regmap import load_maps


@pytest.mark.parametrize(("connectivity", "faults", "open_alarm", "state"), [
    ("online", [], False, "ok"),
    ("online", [], True, "alarm"),
    ("offline", ["stuck"], True, "alarm"),       # an alarm outranks everything
    ("online", ["smoke_open"], False, "fault"),
    ("offline", ["smoke_open"], False, "fault"),  # a known fault says more than silence
    ("offline", [], False, "offline"),
    ("unknown", [], False, "unknown"),            # gateway offline: no promise it is fine
])
def test_a_device_shows_the_worst_thing_that_is_true_of_it(
        connectivity: str, faults: list[str], open_alarm: bool, state: str) -> None:
    assert device_state(connectivity, faults, open_alarm) == state


def test_a_site_takes_its_worst_device_and_an_empty_site_is_not_called_fine() -> None:
    assert worst_state(["ok", "offline", "ok"]) == "offline"
    assert worst_state(["fault", "alarm", "unknown"]) == "alarm"
    assert worst_state([]) == "unknown"


def test_the_board_puts_unacknowledged_then_most_severe_then_newest_first() -> None:
    rows = [  # (name, state, severity, raised at)
        ("old critical", "raised", "critical", 100.0),
        ("new warning", "raised", "warning", 300.0),
        ("new critical", "raised", "critical", 200.0),
        ("acknowledged critical", "acknowledged", "critical", 400.0),
        ("no severity", "raised", None, 500.0),
    ]
    order = sorted(rows, key=lambda r: alarm_order_key(r[1], r[2], r[3], 0))
    assert [r[0] for r in order] == ["new critical", "old critical", "new warning",
                                     "no severity", "acknowledged critical"]


def test_every_charted_field_and_threshold_exists_in_the_register_maps() -> None:
    maps = load_maps()
    for device_class, charts in CHART_THRESHOLDS.items():
        cmap = maps.classes[device_class]
        for chart in charts:
            cmap.input_register(chart.field)
            for name in chart.thresholds:
                assert cmap.holding_register(name).default is not None


def test_an_area_is_outlined_by_the_hull_of_its_sites() -> None:
    square = [(0.0, 0.0), (0.0, 2.0), (2.0, 2.0), (2.0, 0.0), (1.0, 1.0), (0.0, 0.0)]
    assert sorted(hull(square)) == [(0.0, 0.0), (0.0, 2.0), (2.0, 0.0), (2.0, 2.0)]
    assert hull([(1.0, 1.0), (1.0, 1.0)]) == [(1.0, 1.0)]
    assert hull([(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]) == [(0.0, 0.0), (2.0, 2.0)]


def test_a_city_whose_wards_have_boundaries_gets_no_hull_across_them() -> None:
    # (id, path, has an outline): a city, two outlined wards, one ward without, and a block
    # with an outline inside the ward without one.
    areas = [(1, "/1/", False), (2, "/1/2/", True), (3, "/1/3/", True), (4, "/1/4/", False),
             (5, "/1/4/5/", True)]
    tri = [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0)]
    positions = {2: tri, 3: [(5.0, 5.0), (5.0, 6.0), (6.0, 5.0)],
                 4: [(9.0, 9.0), (9.0, 8.0)], 5: [(20.0, 20.0), (20.0, 21.0), (21.0, 20.0)]}
    hulls = area_hulls(areas, positions)
    assert set(hulls) == {1, 4}  # outlined areas are drawn by their outline, never a hull
    # The ward without an outline: its own two sites, not the outlined block's.
    assert sorted(hulls[4]) == [(9.0, 8.0), (9.0, 9.0)]
    # The city: only what no outline below it shows (ward 4's own sites).
    assert sorted(hulls[1]) == [(9.0, 8.0), (9.0, 9.0)]
    # Without outlines anywhere, the city is the hull of everything.
    bare = area_hulls([(i, p, False) for i, p, _ in areas], positions)
    assert sorted(bare[1]) == sorted(hull(pt for pts in positions.values() for pt in pts))


def test_every_demo_site_lies_inside_its_wards_outline() -> None:
    from edgefleet.stack import SITES, WARD_OUTLINES
    from fleet.registry.outline import check_outline

    def inside(lon: float, lat: float, ring: list[list[float]]) -> bool:  # ray casting
        hit = False
        for (x1, y1), (x2, y2) in itertools.pairwise(ring):
            if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
                hit = not hit
        return hit

    for ward, site, lat, lon in SITES:
        [ring] = check_outline(WARD_OUTLINES[ward])["coordinates"]
        assert inside(lon, lat, ring), (ward, site)
        others = [w for w in WARD_OUTLINES if w != ward
                  and inside(lon, lat, WARD_OUTLINES[w]["coordinates"][0])]
        assert others == [], (site, others)
