"""Recent-history charts over the API: a device's series for users who may see it, 404 for
those who may not, and refusals for requests that make no sense."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleet.telemetry import EmbeddedStore, Reading

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def _fill(settings, device: str, gateway: str) -> None:  # type: ignore[no-untyped-def]
    store = EmbeddedStore(settings.data_dir / "telemetry.db")
    start = NOW - timedelta(minutes=10)
    store.write([Reading(device=device, epoch="e1", seq=i + 1,
                         ts_ms=int((start + timedelta(seconds=10 * i)).timestamp() * 1000),
                         device_class="fire", values={"temperature": float(i % 6)},
                         gateway=gateway) for i in range(60)])
    # The same device name under another gateway must not leak into this one's chart.
    store.write([Reading(device=device, epoch="other", seq=1,
                         ts_ms=int(start.timestamp() * 1000), device_class="fire",
                         values={"temperature": 99.0}, gateway="gw-elsewhere")])
    store.close()


def test_a_ward_user_charts_a_detector_in_their_ward(client, world, fleet_settings) -> None:  # type: ignore[no-untyped-def]
    _fill(fleet_settings, "fire-a", "gw-a")
    since = (NOW - timedelta(minutes=10)).isoformat()
    r = client.get(f"/api/v1/devices/{world.devices['fire-a']}/telemetry",
                   params={"field": "temperature", "since": since, "until": NOW.isoformat(),
                           "step_s": 60}, headers=world.headers("fire-safety"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["points"]) == 10
    assert all(p["n"] == 6 and p["mean"] == 2.5 and p["max"] == 5.0 for p in body["points"])


def test_a_device_outside_the_users_area_or_role_is_not_found(  # type: ignore[no-untyped-def]
        client, world, fleet_settings) -> None:
    _fill(fleet_settings, "fire-b", "gw-b")
    url = f"/api/v1/devices/{world.devices['fire-b']}/telemetry"
    assert client.get(url, params={"field": "temperature"},
                      headers=world.headers("fire-safety")).status_code == 404  # ward B
    url_a = f"/api/v1/devices/{world.devices['fire-a']}/telemetry"
    assert client.get(url_a, params={"field": "temperature"},
                      headers=world.headers("utility")).status_code == 404  # fire, no grant
    assert client.get(url_a, params={"field": "temperature"}).status_code == 401


def test_a_chart_request_for_too_many_points_gets_a_wider_step_not_an_error(  # type: ignore[no-untyped-def]
        client, world, fleet_settings) -> None:
    _fill(fleet_settings, "fire-a", "gw-a")
    url = f"/api/v1/devices/{world.devices['fire-a']}/telemetry"
    h = world.headers("admin")
    r = client.get(url, params={"field": "temperature", "step_s": 1, "until": NOW.isoformat(),
                                "since": (NOW - timedelta(days=30)).isoformat()}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["step_s"] == 30 * 86400 / fleet_settings.telemetry.max_points
    # an empty or reversed range has no points; a naive time is UTC
    r = client.get(url, params={"field": "temperature", "since": NOW.isoformat(),
                                "until": (NOW - timedelta(hours=1)).isoformat()}, headers=h)
    assert r.status_code == 200 and r.json()["points"] == []
    naive = (NOW - timedelta(minutes=10)).replace(tzinfo=None).isoformat()
    r = client.get(url, params={"field": "temperature", "since": naive}, headers=h)
    assert len(r.json()["points"]) == 10
    assert client.get(url, params={"field": 'a"b'}, headers=h).status_code == 422
    assert client.get(f"/api/v1/devices/{2**40}/telemetry",
                      params={"field": "t"}, headers=h).status_code == 422
