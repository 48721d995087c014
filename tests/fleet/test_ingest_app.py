"""Ingest inside the fleet app: it starts and stops with the app's lifespan, and what it takes
in shows up in the API (delivery accounting, charts, alarms) and in /metrics."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.mqtt import device_topic
from fleet.ingest.settings import IngestSettings
from tests.fleet.ingest_harness import FleetBroker, publish_lines, telemetry_line, wait_until

#: Measurement times an hour or two back: inside the embedded store's raw retention, so its
#: periodic roll-up never prunes the rows a check counts.
T0_MS = int(time.time() * 1000) - 2 * 3600 * 1000


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[FleetBroker]:
    b = FleetBroker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def app_client(fleet_settings, fleet_db, broker):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from fleet.app import create_app

    settings = fleet_settings.model_copy(update={"ingest": IngestSettings(
        host=broker.host, port=broker.port, client_id="app-ingest", batch_wait_s=0.01)})
    app = create_app(settings, database=fleet_db)
    with TestClient(app) as client:
        assert app.state.ingest_metrics is not None
        wait_until(lambda: app.state.ingest_metrics.connected, 10, "ingest connected")
        yield client


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_the_apps_ingest_accounts_charts_and_exposes_what_a_gateway_sends(  # type: ignore[no-untyped-def]
        app_client, world, broker) -> None:
    # seqs 1..40 arrive, 41..45 were dropped by the gateway's disk policy and declared,
    # 46..50 arrive; one malformed message is thrown in.
    lines = [telemetry_line("fire-a", "ep", s, T0_MS) for s in range(1, 51) if not 41 <= s <= 45]
    topic = device_topic("gw-a", "fire-a", "telemetry")
    publish_lines(broker, {topic: [*lines, "{broken"]})
    publish_lines(broker, {device_topic("gw-a", "fire-a", "drops"): [json.dumps(
        {"v": 1, "device": "fire-a", "epoch": "ep", "ranges": [[41, 45]], "reason": "disk"})]})
    url = f"/api/v1/devices/{world.devices['fire-a']}/delivery"
    h = world.headers("technician")

    def balanced() -> bool:
        streams = app_client.get(url, headers=h).json()["streams"]
        return bool(streams) and streams[0]["balanced"] and streams[0]["produced"] == 50

    wait_until(balanced, 20, "the books to balance")
    [stream] = app_client.get(url, headers=h).json()["streams"]
    assert stream | {"first_at": None, "updated_at": None} == {
        "epoch": "ep", "produced": 50, "received": 45, "duplicates": 0, "declared_drops": 5,
        "gaps": 0, "balanced": True, "gap_ranges": [], "first_at": None, "updated_at": None}
    assert app_client.get(f"/api/v1/devices/{world.devices['fire-b']}/delivery",
                          headers=h).status_code == 404  # ward B

    metrics = app_client.get("/metrics", headers=world.headers("admin"))
    assert metrics.status_code == 200
    text = metrics.text
    assert _metric(text, 'edgefleet_ingest_messages_total{channel="telemetry"}') == 45
    assert _metric(text, 'edgefleet_ingest_rejects_total{gateway="gw-a",reason="bad-telemetry"}'
                   ) == 1
    assert _metric(text, 'edgefleet_delivery_total{kind="declared_drops"}') == 5
    assert _metric(text, 'edgefleet_delivery_total{kind="gaps"}') == 0
    assert "edgefleet_ingest_lag_seconds" in text and "edgefleet_alarms" in text


def test_a_gap_nobody_declared_shows_per_device_in_metrics(app_client, world, broker) -> None:  # type: ignore[no-untyped-def]
    lines = [telemetry_line("flood-a", "ep", s, T0_MS) for s in (1, 2, 3, 7)]
    publish_lines(broker, {device_topic("gw-a", "flood-a", "telemetry"): lines})
    gap = 'edgefleet_device_gaps{gateway="gw-a",device="flood-a"} 3'
    wait_until(lambda: gap in app_client.get("/metrics", headers=world.headers("admin")).text,
               20, "the gap in /metrics")
    [stream] = app_client.get(f"/api/v1/devices/{world.devices['flood-a']}/delivery",
                              headers=world.headers("admin")).json()["streams"]
    assert stream["gap_ranges"] == [[4, 6]] and not stream["balanced"]
