"""The whole gateway against real neighbours: firmware nodes on a simulated RS-485 bus, a real
Mosquitto, and a subscriber that checks every message it gets, as the fleet would."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hardware.sim.simbus import SimBus
from hardware.sim.simrun import PhysicsFeed, attach_physics
from tests.conftest import wait_for
from tests.gateway.gwconfig import Node, fire_rule, gateway_toml
from tests.gateway.mosquitto import Broker, Received, Subscriber, free_port, publish_once

GW = "gw-test"
NODES = [(1, "fire", "fire-1"), (2, "flood", "flood-2"), (3, "fire", "fire-3"),
         (9, "flood", "pump-9")]


def _config(port: str, broker: Broker, storage: Path, extra: str = "") -> str:
    return gateway_toml(GW, broker, storage, port, [Node(a, c, i) for a, c, i in NODES],
                        gateway_extra='site = "test ward"',
                        extra=fire_rule("fire sounds the siren", "pump-9") + extra)


@dataclass
class Rig:
    sim: SimBus
    feed: PhysicsFeed
    broker: Broker
    config: Path
    proc: subprocess.Popen[bytes] | None = None

    def start_gateway(self) -> None:
        with open(self.config.with_suffix(".log"), "ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgefleet.cli", "-v", "gateway", "run", str(self.config)],
                stdout=subprocess.DEVNULL, stderr=log_file)

    def stop_gateway(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=15)

    def log(self) -> str:
        return self.config.with_suffix(".log").read_text(errors="replace")


@pytest.fixture
def rig(tmp_path: Path, broker: Broker) -> Iterator[Rig]:
    sim = SimBus([(a, c) for a, c, _ in NODES])
    feed = attach_physics(sim)
    sim.start()
    config = tmp_path / "gateway.toml"
    config.write_text(_config(sim.master_path, broker, tmp_path / "state"))
    r = Rig(sim, feed, broker, config)
    yield r
    if r.proc and r.proc.poll() is None:
        r.proc.kill()
        r.proc.wait()
    sim.stop()


def _json(m: Received) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(m.payload)
    return body


def _of(messages: list[Received], device: str, channel: str) -> list[dict[str, Any]]:
    return [_json(m) for m in messages if m.topic == f"edgefleet/v1/{GW}/{device}/{channel}"]


def queued(db: Path) -> int:
    """Messages in the gateway's outbox, read as a second process would (read-only)."""
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
        except sqlite3.OperationalError:  # not created yet
            return 0


def outbox_seqs(db: Path) -> tuple[dict[str, int], dict[str, set[int]]]:
    """The last seq handed out per device, and the seqs still queued, from a stopped gateway."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        produced = {device: int(seq) - 1 for device, seq in
                    conn.execute("SELECT device, next_seq FROM devices")}
        queued_: dict[str, set[int]] = defaultdict(set)
        for device, seq in conn.execute("SELECT device, seq FROM outbox WHERE seq IS NOT NULL"):
            queued_[device].add(int(seq))
    return produced, queued_


def _delivered_all(messages: list[Received], produced: dict[str, int],
                   still_queued: dict[str, set[int]], delivered: dict[str, set[int]]) -> bool:
    delivered.clear()
    for m in messages:
        body = _json(m)
        if "seq" in body:
            delivered[body["device"]].add(body["seq"])
    return all(set(range(1, last + 1)) <= delivered[d] | still_queued[d]
               for d, last in produced.items())


def test_fire_alarm_reaches_the_fleet_and_sounds_the_siren(rig: Rig) -> None:
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start_gateway()
        sub.wait_for(lambda ms: _of(ms, "fire-1", "telemetry"), 20, "fire-1 telemetry")
        telemetry = _of(sub.messages, "fire-1", "telemetry")[0]
        assert telemetry["class"] == "fire" and telemetry["units"]["smoke"] == "%/m"
        assert set(telemetry["values"]) >= {"smoke", "temperature", "heat_rise_rate"}
        state = _of(sub.messages, "fire-1", "state")[0]
        assert state["online"] is True and state["firmware"] == "0.1.0"

        rig.feed.apply(1, "ignite", {"growth": 1.0})
        crossed = wait_for(lambda: rig.feed.truth(1)["smoke"] > 4.0 and time.monotonic(), 60,
                           what="the smoke in room 1 to pass 4 %/m")
        assert isinstance(crossed, float)
        sub.wait_for(lambda ms: any(a["state"] == "raised" for a in _of(ms, "fire-1", "alarm")),
                     20, "the fire alarm")
        raised_at = time.monotonic()
        alarm = next(a for a in _of(sub.messages, "fire-1", "alarm") if a["state"] == "raised")
        assert alarm["severity"] in ("critical", "warning")
        assert alarm["alarm_id"].startswith("fire-1:")
        assert alarm["location"] == "room 1"
        # 5-sample median at 500 ms + one 500 ms status poll + delivery: well inside 10 s
        assert raised_at - crossed < 6.0, f"alarm {raised_at - crossed:.1f}s after the smoke"
        # the edge rule switched the siren relay on pump-9 locally, without the broker
        wait_for(lambda: rig.sim.node(9).events.outputs[:1] == [1], 3,
                 what="the siren coil on node 9")
        rig.stop_gateway()
    assert "rule fire sounds the siren" in rig.log()


def test_broker_outage_and_gateway_kill_lose_nothing_and_duplicate_nothing(
        tmp_path: Path) -> None:
    broker = Broker(tmp_path / "mosquitto", persistence=True)
    broker.start()
    sim = SimBus([(a, c) for a, c, _ in NODES])
    attach_physics(sim)
    sim.start()
    config = tmp_path / "gateway.toml"
    # fast telemetry so the outage builds a real backlog
    text = _config(sim.master_path, broker, tmp_path / "state").replace(
        'location = "room 1"', 'location = "room 1"\npoll = { telemetry_ms = 300 }')
    config.write_text(text)
    rig = Rig(sim, attach_physics(sim), broker, config)
    try:
        with Subscriber(broker, f"edgefleet/v1/{GW}/+/+", client_id="fleet-ingest",
                        persistent=True) as sub, \
                Subscriber(broker, f"edgefleet/v1/{GW}/status", client_id="fleet-status",
                           persistent=True) as status:
            rig.start_gateway()
            sub.wait_for(lambda ms: len(_of(ms, "fire-1", "telemetry")) >= 5, 30, "telemetry")
            # The fleet's ingest disconnects cleanly first: Mosquitto 2.0 can lose QoS 1
            # messages that were in flight to a subscriber when the broker itself stops, which
            # is the broker's loss, not the gateway's, and not what this test is about.
            sub.pause()
            broker.stop()
            depth = queued(tmp_path / "state" / "outbox.db")
            wait_for(lambda: queued(tmp_path / "state" / "outbox.db") >= depth + 20, 30,
                     what="the gateway to keep polling into its outbox")
            status.pause()
            seen = max(_json(m).get("ts", "") for m in status.messages)
            broker.start()
            sub.resume()
            status.resume()
            # The gateway reconnects on its own back-off (capped at 30 s): wait for it to say
            # it is online again, then for the backlog.
            status.wait_for(lambda ms: any(_json(m)["online"] and _json(m)["ts"] > seen
                                           for m in ms), 60,
                            "the gateway online again after the outage")
            sub.wait_for(lambda ms: len(_of(ms, "fire-1", "telemetry")) >= 40, 40,
                         "the backlog after the outage")
            rig.stop_gateway(signal.SIGKILL)  # no goodbye, no flush
            rig.start_gateway()
            before = len(sub.messages)
            sub.wait_for(lambda ms: len(ms) > before + 20, 40, "messages after the restart")
            rig.stop_gateway()
            # what the gateway produced: every seq it handed out, from its own database
            produced, still_queued = outbox_seqs(tmp_path / "state" / "outbox.db")
            delivered: dict[str, set[int]] = defaultdict(set)
            sub.wait_for(lambda ms: _delivered_all(ms, produced, still_queued, delivered), 20,
                         "every produced message delivered or still queued")
        assert set(produced) == {i for _, _, i in NODES}
        for device, last in produced.items():
            # nothing lost, the tail included: each seq up to the last produced one was
            # delivered or is still durably queued for the next connection
            missing = set(range(1, last + 1)) - delivered[device] - still_queued[device]
            assert not missing, f"{device}: lost seqs {sorted(missing)[:10]}"
        assert len(delivered["fire-1"]) > 40
    finally:
        if rig.proc and rig.proc.poll() is None:
            rig.proc.kill()
        sim.stop()
        broker.stop()


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def test_a_silent_node_is_reported_offline_not_republished(rig: Rig) -> None:
    port = free_port()
    rig.config.write_text(rig.config.read_text().replace(
        'site = "test ward"', f'site = "test ward"\nmetrics_port = {port}'))
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start_gateway()
        sub.wait_for(lambda ms: _of(ms, "flood-2", "telemetry"), 20, "flood-2 telemetry")
        rig.sim.hub.faults.dead_ports.add(2)  # node 2's transceiver dies
        died = time.monotonic()
        sub.wait_for(lambda ms: any(s["online"] is False for s in _of(ms, "flood-2", "state")),
                     60, "flood-2 reported offline")
        # OFFLINE_AFTER missed polls of a 1 s status period with a 0.3 s timeout: ~4 s
        took = time.monotonic() - died
        assert took < 10, f"offline reported {took:.1f} s after the node died"
        offline_at = len(sub.messages)
        # more than one telemetry period (5 s) later: two fresh readings from fire-1 ...
        sub.wait_for(lambda ms: len(_of(ms[offline_at:], "fire-1", "telemetry")) >= 2, 30,
                     "the rest of the bus to keep going")
        later = sub.messages[offline_at:]
        # ... and none from flood-2, whose last values are never re-published as fresh
        assert not _of(later, "flood-2", "telemetry"), "stale values re-published as fresh"
        scrape = _metrics(port)  # what the operations centre's Prometheus sees
        assert f'edgefleet_device_online{{gateway="{GW}",bus="riser",device="flood-2"}} 0' \
            in scrape
        assert f'edgefleet_device_online{{gateway="{GW}",bus="riser",device="fire-1"}} 1' \
            in scrape
        assert "# TYPE edgefleet_outbox_depth gauge" in scrape
        rig.sim.hub.faults.dead_ports.clear()
        sub.wait_for(lambda ms: _of(ms, "flood-2", "state")[-1]["online"] is True, 40,
                     "flood-2 back online")
        rig.stop_gateway()


def test_fleet_commands_write_thresholds_and_refuse_nonsense(rig: Rig) -> None:
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/ack") as acks, \
            Subscriber(rig.broker, f"edgefleet/v1/{GW}/status") as status:
        rig.start_gateway()
        # "online" is published after the command subscription: the gateway is listening
        status.wait_for(lambda ms: any(_json(m)["online"] for m in ms), 20, "online status")
        cmd = f"edgefleet/v1/{GW}/cmd"
        publish_once(rig.broker, f"{cmd}/flood-2/write",
                     json.dumps({"id": "c1", "register": "stage1", "value": 0.42}).encode())
        publish_once(rig.broker, f"{cmd}/nobody/write",
                     json.dumps({"id": "c2", "register": "stage1", "value": 1}).encode())
        publish_once(rig.broker, f"{cmd}/flood-2/write",
                     json.dumps({"id": "c3", "register": "stage1", "value": 99}).encode())
        publish_once(rig.broker, f"{cmd}/flood-2/write", b"{not json")
        got = acks.wait_count(4, 20)
        by_id = {_json(m).get("id"): _json(m) for m in got}
        assert by_id["c1"]["ok"] is True
        assert by_id["c2"]["ok"] is False and "unknown device" in by_id["c2"]["error"]
        assert by_id["c3"]["ok"] is False and "outside" in by_id["c3"]["error"]
        assert any(not a["ok"] and "JSON" in a.get("error", "") for a in by_id.values())
        stored = (rig.sim.node(2).root / "data" / "config.json").read_text()
        assert '"stage1": 42' in stored
        assert rig.proc is not None and rig.proc.poll() is None  # still running
        rig.stop_gateway()


def test_bad_config_is_refused_with_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "gw.toml"
    bad.write_text('[gateway]\nid = "g"\nstorage = "s"\n\n[mqtt]\nhost = "h"\ntls = false\n'
                   'password = "admin"\n')
    out = subprocess.run([sys.executable, "-m", "edgefleet.cli", "gateway", "check", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "gw.toml:8: mqtt.password" in out.stderr, out.stderr
    run = subprocess.run([sys.executable, "-m", "edgefleet.cli", "gateway", "run", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "mqtt.password" in run.stderr


def test_no_broker_the_gateway_keeps_polling_into_its_outbox(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "mosquitto")  # configured, never started: connection refused
    sim = SimBus([(a, c) for a, c, _ in NODES])
    attach_physics(sim)
    sim.start()
    config = tmp_path / "gateway.toml"
    config.write_text(_config(sim.master_path, broker, tmp_path / "state"))
    rig = Rig(sim, attach_physics(sim), broker, config)
    try:
        rig.start_gateway()
        wait_for(lambda: queued(tmp_path / "state" / "outbox.db") > 20, 30,
                 what="a backlog while the broker refuses")
        assert rig.proc is not None and rig.proc.poll() is None
        assert "refused" in rig.log().lower() or "connect" in rig.log().lower()
        broker.start()
        with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
            sub.wait_for(lambda ms: len(ms) > 20, 40, "the backlog delivered")
        rig.stop_gateway()
    finally:
        if rig.proc and rig.proc.poll() is None:
            rig.proc.kill()
        sim.stop()
        broker.stop()



def test_garbage_on_the_bus_and_a_misconfigured_node_never_stop_the_gateway(
        tmp_path: Path, broker: Broker) -> None:
    sim = SimBus([(1, "fire"), (2, "flood"), (3, "fire"), (9, "flood")])
    attach_physics(sim)
    sim.start()
    config = tmp_path / "gateway.toml"
    # fire-3 is configured as a flood gauge: the node at address 3 will say it is a detector
    text = _config(sim.master_path, broker, tmp_path / "state").replace(
        'address = 3\nclass = "fire"', 'address = 3\nclass = "flood"')
    config.write_text(text)
    rig = Rig(sim, attach_physics(sim), broker, config)
    try:
        with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
            rig.start_gateway()
            sub.wait_for(lambda ms: _of(ms, "fire-1", "telemetry"), 20, "fire-1 telemetry")
            sim.hub.faults.bit_noise = 0.03  # a badly terminated cable: CRC errors everywhere
            corrupted = sim.hub.stats.corrupted_bytes
            wait_for(lambda: sim.hub.stats.corrupted_bytes > corrupted + 200, 30,
                     what="the noisy line to corrupt a few hundred bytes")
            sim.hub.faults.bit_noise = 0.0
            count = len(_of(sub.messages, "fire-1", "telemetry"))
            sub.wait_for(lambda ms: len(_of(ms, "fire-1", "telemetry")) > count, 30,
                         "telemetry again once the line is clean")
            assert rig.proc is not None and rig.proc.poll() is None
            assert not _of(sub.messages, "fire-3", "telemetry"), \
                "a node of the wrong class must not be published as the configured class"
            rig.stop_gateway()
        assert "configured as flood" in rig.log() and "reports class 1" in rig.log()
    finally:
        if rig.proc and rig.proc.poll() is None:
            rig.proc.kill()
        sim.stop()


def test_a_node_on_a_trial_image_is_confirmed_once_it_has_run_healthy_for_a_while(
        tmp_path: Path, broker: Broker) -> None:
    """A freshly installed image runs as a trial and rolls back unless confirmed: the gateway
    confirms it after confirm_trial_after_s of healthy polls, and tells the fleet."""
    import shutil

    from tests.bus.test_trial_boot import FIRMWARE, read_record, record

    sim = SimBus([(a, c) for a, c, _ in NODES])
    attach_physics(sim)
    root = sim.nodes[0].root  # fire-1 boots slot b as a trial
    shutil.copytree(FIRMWARE / "app", root / "b" / "app")
    (root / "slots.json").write_bytes(record(
        {"active": "b", "previous": "a", "trial": True, "tries": 0}))
    sim.start()
    config = tmp_path / "gateway.toml"
    config.write_text(_config(sim.master_path, broker, tmp_path / "state").replace(
        'site = "test ward"', 'site = "test ward"\nconfirm_trial_after_s = 3'))
    rig = Rig(sim, attach_physics(sim), broker, config)
    try:
        with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
            rig.start_gateway()
            sub.wait_for(lambda ms: any("trial" in s["status"]
                                        for s in _of(ms, "fire-1", "state")), 30,
                         "fire-1 reporting its trial image")
            got = sub.wait_for(lambda ms: any(
                _json(m).get("event") == "trial_confirmed" for m in ms
                if m.topic == f"edgefleet/v1/{GW}/event"), 30, "the gateway's confirm")
            states = _of(got, "fire-1", "state")
            sub.wait_for(lambda ms: "trial" not in _of(ms, "fire-1", "state")[-1]["status"],
                         15, "fire-1's state without trial")
        assert read_record(root / "slots.json")["trial"] is False
        assert any("trial" in s["status"] for s in states)
        # the other nodes run their confirmed image and were never written to
        confirms = [_json(m) for m in got if m.topic == f"edgefleet/v1/{GW}/event"
                    and _json(m).get("event") == "trial_confirmed"]
        assert [c["device"] for c in confirms] == ["fire-1"]
    finally:
        rig.stop_gateway()
        sim.stop()
