"""The broker configuration the fleet ships (fleet/ingest/broker.py), rendered and run: with it a
subscriber that is away or far behind loses nothing, across a broker restart too; with
Mosquitto's defaults the same subscriber loses messages (why the configuration exists)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.ingest.broker import GIB, BrokerConfig, Listener, mosquitto_conf
from tests.fleet.ingest_harness import FleetBroker, publish_lines, wait_for_count
from tests.gateway.mosquitto import HOST, Broker, Subscriber

BURST = 5_000


def test_the_rendered_config_persists_queues_by_bytes_and_hooks_in_provisioning() -> None:
    text = mosquitto_conf(BrokerConfig(persistence_location=Path("/var/lib/edgefleet/mq"),
                                       listeners=(Listener(1883, "127.0.0.1"), Listener(8883, "")),
                                       include_dir=Path("/etc/mosquitto/edgefleet.d"),
                                       run_as_root=False))
    lines = set(text.splitlines())
    assert {"persistence true", "persistence_location /var/lib/edgefleet/mq/",
            "max_queued_messages 0", f"max_queued_bytes {GIB}", "max_inflight_messages 1000",
            "listener 1883 127.0.0.1", "listener 8883",
            "include_dir /etc/mosquitto/edgefleet.d"} <= lines
    assert "user root" not in lines
    # provisioning's TLS listener and ACLs come last, after everything they may refine
    assert text.rstrip().endswith("include_dir /etc/mosquitto/edgefleet.d")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_queued_messages": 0, "max_queued_bytes": 0}, "bound"),
    ({"max_queued_bytes": -1}, "0 meaning no limit"),
    ({"max_inflight_messages": 0}, "max_inflight_messages"),
])
def test_a_config_that_would_lose_or_hoard_messages_is_refused(kwargs: dict[str, int],
                                                                message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BrokerConfig(**kwargs)  # type: ignore[arg-type]


class DefaultsBroker(Broker):
    """Mosquitto with nothing but a listener: its defaults, as a fresh install has them."""

    def _render(self, extra: str) -> str:
        root = "user root\n" if os.geteuid() == 0 else ""
        return (f"{root}log_dest file {self.log}\nlog_type all\n"
                f"listener {self.port} {HOST}\nallow_anonymous true\n")


@pytest.fixture
def fleet_broker(tmp_path: Path) -> Iterator[FleetBroker]:
    b = FleetBroker(tmp_path / "fleet-mq")
    b.start()
    yield b
    b.stop()


def _burst_while_away(broker: Broker, client_id: str, restart_broker: bool = False) -> int:
    """A persistent QoS 1 subscriber goes away, a burst arrives, (the broker restarts), the
    subscriber comes back: how many distinct messages does it get?"""
    topic = "edgefleet/v1/gw-1/fire-1/telemetry"
    with Subscriber(broker, "edgefleet/v1/#", client_id=client_id, persistent=True) as sub:
        sub.pause()
        publish_lines(broker, {topic: [f'{{"n":{i}}}' for i in range(BURST)]})
        if restart_broker:
            broker.stop()
            broker.start()
        sub.resume()
        try:  # until all arrived, or nothing more for 3 s
            wait_for_count(lambda: len(sub.messages), BURST, stall_s=3, what="burst")
        except AssertionError:
            pass
        return len({m.payload for m in sub.messages})


def test_with_the_fleet_config_a_subscriber_away_during_a_burst_loses_nothing(
        fleet_broker: FleetBroker) -> None:
    assert _burst_while_away(fleet_broker, "fleet-away") == BURST
    assert not fleet_broker.dropped_outgoing()


def test_with_the_fleet_config_queued_messages_survive_a_broker_restart(
        fleet_broker: FleetBroker) -> None:
    assert _burst_while_away(fleet_broker, "fleet-restart", restart_broker=True) == BURST


def test_with_mosquittos_defaults_the_same_subscriber_loses_messages(tmp_path: Path) -> None:
    broker = DefaultsBroker(tmp_path / "defaults-mq")
    broker.start()
    try:
        got = _burst_while_away(broker, "defaults-away")
    finally:
        broker.stop()
    assert got < BURST, "Mosquitto's defaults kept everything: is this test still needed?"
    assert "Outgoing messages are being dropped" in broker.log_text()
