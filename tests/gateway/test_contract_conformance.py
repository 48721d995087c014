"""Everything a real gateway run publishes follows the MQTT contract (contracts/mqtt.py), as
the fleet will parse it: telemetry, alarms, state (online and offline), rule events, command
acks, the gateway status, and the drops declared after a broker outage filled the disk bound.
And from those messages alone the fleet can account for every seq of every device."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from contracts.mqtt import (
    AckPayload,
    AlarmPayload,
    DropsPayload,
    GatewayStatusPayload,
    StatePayload,
    TelemetryPayload,
    parse_payload,
    parse_topic,
)
from hardware.sim.simbus import SimBus
from hardware.sim.simrun import attach_physics
from tests.conftest import wait_for
from tests.gateway.gwconfig import Node, fire_rule, gateway_toml
from tests.gateway.mosquitto import Broker, Received, Subscriber, publish_once

GW = "gw-contract"
NODES = [(1, "fire", "fire-1"), (2, "flood", "flood-2"), (3, "fire", "fire-3")]


def _config(port: str, broker: Broker, storage: Path) -> str:
    return gateway_toml(
        GW, broker, storage, port,
        [Node(a, c, i, poll="telemetry_ms = 150, max_backoff_s = 1") for a, c, i in NODES],
        gateway_extra="max_outbox_mb = 0.008", timeout_s=0.2,
        extra=fire_rule("fire starts the pump", "flood-2"))


def _dropped(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        row = con.execute("SELECT value FROM meta WHERE key = 'dropped_telemetry'").fetchone()
        return int(row[0]) if row else 0


def _channel(messages: list[Received], channel: str) -> list[Received]:
    return [m for m in messages if m.topic.endswith("/" + channel)]


def test_every_message_of_a_gateway_run_parses_with_the_contract_and_adds_up(
        tmp_path: Path) -> None:
    broker = Broker(tmp_path / "mosquitto", persistence=True)
    broker.start()
    sim = SimBus([(a, c) for a, c, _ in NODES])
    feed = attach_physics(sim)
    sim.start()
    config = tmp_path / "gateway.toml"
    config.write_text(_config(sim.master_path, broker, tmp_path / "state"))
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "edgefleet.cli", "gateway", "run",
                             str(config)], stdout=subprocess.DEVNULL, stderr=log)
    try:
        with Subscriber(broker, f"edgefleet/v1/{GW}/#", client_id="fleet-ingest",
                        persistent=True) as fleet:
            fleet.wait_for(lambda ms: all(any(m.topic.endswith(f"/{i}/telemetry") for m in ms)
                                          for _, _, i in NODES), 30, "telemetry of every node")
            publish_once(broker, f"edgefleet/v1/{GW}/cmd/fire-1/repoll", b'{"id": "c-1"}')
            publish_once(broker, f"edgefleet/v1/{GW}/cmd/nobody/repoll", b'{"id": "c-2"}')
            feed.apply(1, "ignite", {"growth": 1.0})
            fleet.wait_for(lambda ms: len(_channel(ms, "ack")) >= 2
                           and any(m.topic.endswith("/fire-1/alarm") for m in ms)
                           and any(m.topic.endswith(f"{GW}/event") for m in ms), 60,
                           "two acks, the fire alarm and the rule event")
            # the uplink goes down long enough for the 8 kB disk bound to drop telemetry
            fleet.pause()
            broker.stop()
            wait_for(lambda: _dropped(tmp_path / "state" / "outbox.db") > 20, 30,
                     what="telemetry dropped under the disk bound")
            sim.hub.faults.dead_ports.add(3)  # and fire-3 goes silent (port 0 is the master)
            broker.start()
            fleet.resume()
            fleet.wait_for(lambda ms: len({parse_topic(m.topic).device for m in ms
                                           if m.topic.endswith("/drops")}) == 3
                           and any(m.topic.endswith("/fire-3/state")
                                   and not json.loads(m.payload)["online"] for m in ms), 30,
                           "drops of every device and fire-3 offline")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
            fleet.wait_for(lambda ms: any(m.topic.endswith("/status")
                                          and not json.loads(m.payload)["online"] for m in ms),
                           10, "the gateway's own offline status")
            messages = list(fleet.messages)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        sim.stop()
        broker.stop()

    kinds: dict[type, int] = defaultdict(int)
    epochs: set[str] = set()
    seqs: dict[str, set[int]] = defaultdict(set)
    declared: dict[str, set[int]] = defaultdict(set)
    for m in messages:
        topic = parse_topic(m.topic)  # raises ContractError on anything off-contract
        assert topic.gateway == GW
        if topic.channel == "cmd":
            continue  # the fleet's own commands, not the gateway's
        payload = parse_payload(topic.channel, m.payload)
        kinds[type(payload)] += 1
        if isinstance(payload, TelemetryPayload | AlarmPayload | StatePayload):
            assert payload.device == topic.device
            epochs.add(payload.epoch)
            seqs[payload.device].add(payload.seq)
        elif isinstance(payload, DropsPayload):
            epochs.add(payload.epoch)
            for first, last in payload.ranges:
                declared[payload.device].update(range(first, last + 1))
    assert {TelemetryPayload, AlarmPayload, StatePayload, DropsPayload, AckPayload,
            GatewayStatusPayload} <= set(kinds), kinds
    assert len(epochs) == 1  # one outbox, one epoch
    for _, _, device in NODES:  # delivered + declared drops = produced, per device
        produced = max(seqs[device] | declared[device])
        assert seqs[device] | declared[device] == set(range(1, produced + 1)), device
        assert declared[device] - seqs[device], f"{device}: nothing was dropped"
