"""A signed update from the fleet to a node, every part real: a fleet-like HTTP server serving a
release built and signed with provisioning.release, a real Mosquitto, the gateway as it runs on
a Pi (``edgefleet gateway run``), and firmware nodes on a simulated RS-485 bus that receive the
image through their OTA register window, verify it themselves, boot it on trial and are
confirmed by the gateway."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts.mqtt import OtaEvent, command_topic
from hardware.sim.simbus import SimBus
from hardware.sim.simrun import attach_physics
from tests.gateway.mosquitto import Broker, Received, Subscriber, publish_once
from tests.gateway.otafleet import (
    BOARD,
    TOKEN,
    BundleServer,
    Keys,
    app_source,
    bundle,
    flash_trust,
    make_keys,
    make_release,
    sha256,
)

GW = "gw-e2e"
BAUD = 115200  # a 146 KB source release: ~14 s of wire time at this rate
NODES = [(1, "fire", "fire-1"), (2, "flood", "flood-2")]


def _config(port: str, broker: Broker, storage: Path, trust: Path) -> str:
    devices = "\n".join(f'[[bus.device]]\naddress = {a}\nclass = "{c}"\nid = "{i}"\n'
                        for a, c, i in NODES)
    return f"""
[gateway]
id = "{GW}"
storage = "{storage}"
confirm_trial_after_s = 3

[mqtt]
host = "{broker.host}"
port = {broker.port}
tls = false

[ota]
trust = "{trust}"
offer_jitter_s = 1
progress_interval_s = 2

[[bus]]
name = "riser"
type = "rtu"
port = "{port}"
baudrate = {BAUD}
timeout_s = 0.3

{devices}
"""


def release_of(tmp: Path, keys: Keys, version: tuple[int, int, int]) -> Path:
    """The firmware app as it is, reporting ``version``, built and signed as a release."""
    name = "fire-" + ".".join(map(str, version))
    return make_release(tmp / name, keys, version=version,
                        source=app_source(tmp / f"src-{name}", version))


@pytest.fixture
def site(tmp_path: Path, broker: Broker) -> Iterator[tuple[SimBus, Path, Keys]]:
    keys = make_keys(tmp_path / "keys")
    sim = SimBus([(a, c) for a, c, _ in NODES], baud=BAUD,
                 node_options={a: {"board": BOARD} for a, _, _ in NODES})
    flash_trust(sim, keys)
    attach_physics(sim)
    sim.start()
    config = tmp_path / "gateway.toml"
    config.write_text(_config(sim.master_path, broker, tmp_path / "state", keys.trust))
    yield sim, config, keys
    sim.stop()


def _ota(messages: list[Received], device: str) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        if m.topic == f"edgefleet/v1/{GW}/{device}/event":
            body = json.loads(m.payload)
            if body.get("event") == "ota":
                OtaEvent.model_validate_json(m.payload)
                out.append(body)
    return out


# In nox -s soak: the default run takes this path with the real fleet in its place
# (tests/system/test_ota_campaign.py, every class on two buses), and CI time is counted.
@pytest.mark.slow
def test_a_signed_update_reaches_the_node_over_modbus_and_is_confirmed(
        tmp_path: Path, broker: Broker, site: tuple[SimBus, Path, Keys]) -> None:
    _sim, config, keys = site
    data = bundle(release_of(tmp_path, keys, (1, 4, 0)))
    server = BundleServer({"fire-1.4.0": data})
    log = config.with_suffix(".log")
    proc: subprocess.Popen[bytes] | None = None
    try:
        with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub, open(log, "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgefleet.cli", "-v", "gateway", "run", str(config)],
                stdout=subprocess.DEVNULL, stderr=log_file)
            sub.wait_for(lambda ms: any(m.topic == f"edgefleet/v1/{GW}/status"
                                        and json.loads(m.payload)["online"] for m in ms), 30,
                         "the gateway online")
            publish_once(broker, command_topic(GW, "fire-1", "ota"), json.dumps({
                "v": 1, "id": "c-1", "op": "start", "campaign": "17", "release": "1.4.0",
                "url": server.url("fire-1.4.0"), "token": TOKEN, "sha256": sha256(data),
                "size": len(data)}).encode())
            try:
                got = sub.wait_for(lambda ms: any(e["phase"] in ("confirmed", "failed")
                                                  for e in _ota(ms, "fire-1")), 240,
                                   "fire-1's update to end")
            except AssertionError as exc:
                seen = [(e["phase"], e["offset"]) for e in _ota(sub.messages, "fire-1")]
                raise AssertionError(f"{exc}\nphases: {seen}\ngateway log:\n"
                                     f"{log.read_text()[-4000:]}") from None
            # the same command again re-reports where the delivery stands, fetching nothing
            publish_once(broker, command_topic(GW, "fire-1", "ota"), json.dumps({
                "v": 1, "id": "c-2", "op": "start", "campaign": "17", "release": "1.4.0",
                "url": server.url("fire-1.4.0"), "token": TOKEN, "sha256": sha256(data),
                "size": len(data)}).encode())
            again = sub.wait_for(lambda ms: len(_ota(ms, "fire-1")) > len(_ota(got, "fire-1"))
                                 and any(m.topic == f"edgefleet/v1/{GW}/ack"
                                         and json.loads(m.payload)["id"] == "c-2" for m in ms),
                                 20, "the re-report")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        server.close()
    events = _ota(got, "fire-1")
    assert events[-1]["phase"] == "confirmed", (events[-1], log.read_text()[-3000:])
    seen = [e["phase"] for e in events]
    assert [p for p in seen if p != "transferring"] == [
        "accepted", "downloading", "verified", "committed", "trial", "confirmed"], seen
    moving = [e for e in events if e["phase"] == "transferring"]
    assert len(moving) >= 2 and moving[-1]["offset"] > moving[0]["offset"]
    assert events[-1]["offset"] == events[-1]["size"] > len(data) // 2
    # the node runs the release, confirmed: its state says 1.4.0 without the trial bit
    states = [json.loads(m.payload) for m in got
              if m.topic == f"edgefleet/v1/{GW}/fire-1/state"]
    assert any(s["firmware"] == "1.4.0" and "trial" in s["status"] for s in states)
    confirms = [json.loads(m.payload) for m in got if m.topic == f"edgefleet/v1/{GW}/event"
                and json.loads(m.payload).get("event") == "trial_confirmed"]
    assert [(c["device"], c["firmware"]) for c in confirms] == [("fire-1", "1.4.0")]
    assert _ota(again, "fire-1")[-1]["phase"] == "confirmed"
    assert len(server.requests) == 1
    # the flood node beside it was polled all along and never touched
    assert not _ota(got, "flood-2")
    flood = [m for m in got if m.topic == f"edgefleet/v1/{GW}/flood-2/telemetry"]
    assert len(flood) >= 5
