"""The coordinator on its own (no database): acknowledgement only after the batch is durable,
and a clean stop while the sink is down, on both MQTT clients, against the fleet's Mosquitto."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.mqtt import device_topic
from fleet.ingest.coordinator import Coordinator
from fleet.ingest.service import BatchResult, Inbound
from fleet.ingest.settings import IngestSettings
from fleet.telemetry import SinkError
from tests.fleet.ingest_harness import FleetBroker, publish_one, wait_until

TOPIC = device_topic("gw-1", "fire-1", "telemetry")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[FleetBroker]:
    b = FleetBroker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


def _settings(broker: FleetBroker, client: str) -> IngestSettings:
    return IngestSettings(host=broker.host, port=broker.port, client_id=f"coord-{client}",
                          client=client, batch_wait_s=0.01)  # type: ignore[arg-type]


@pytest.mark.parametrize("client", ["paho", "lean"])
def test_stopping_while_the_sink_is_down_hands_the_batch_back_to_the_broker(
        broker: FleetBroker, client: str) -> None:
    attempts: list[int] = []

    def sink_down(batch: list[Inbound]) -> BatchResult:
        attempts.append(len(batch))
        raise SinkError("InfluxDB unreachable")

    first = Coordinator(_settings(broker, client), sink_down, retry_backoff=(0.05, 0.1))
    first.start()
    assert first.wait_subscribed(10)
    publish_one(broker, TOPIC, json.dumps({"n": 1}))
    wait_until(lambda: len(attempts) >= 2, 10, "retries while the sink is down")
    started = time.monotonic()
    first.stop(timeout=5)
    assert first._writer is not None and not first._writer.is_alive(), "writer still retrying"
    assert time.monotonic() - started < 4

    got: list[Inbound] = []
    done = threading.Event()

    def sink_up(batch: list[Inbound]) -> BatchResult:
        got.extend(batch)
        done.set()
        return BatchResult()

    second = Coordinator(_settings(broker, client), sink_up)
    second.start()
    try:
        assert done.wait(10), "the unwritten message was not redelivered"
        assert [m.payload for m in got] == [b'{"n": 1}']
    finally:
        second.stop()
