"""Firmware delivery as the fleet and the field see it: the ``ota`` command against a real
Mosquitto, real firmware nodes on a simulated RS-485 bus, a fleet-like HTTP server and signed
releases; progress read back as OtaEvents by a plain subscriber.

The transfer function is injected here (``RecordingTransfer``): it moves no image over Modbus but
occupies the bus as a transfer does (a real read per chunk, through the same background lane),
keeps "the node's offset" across gateway restarts, and stages the image on the node's flash at
the commit, so the node's real slot picker boots it (trial) or rolls it back. It is what lets
these tests produce a restart at a chosen offset, a cancel mid-transfer, and a long transfer
beside a fire; the end-to-end test with the real register-window transfer is test_ota_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from contracts.mqtt import OtaEvent, command_topic, parse_payload
from gateway.config import load_config
from gateway.ota import JobFile, NodeView, OtaJob, after_commit
from gateway.service import Gateway
from hardware.sim.simbus import SimBus
from hardware.sim.simrun import PhysicsFeed, attach_physics
from tests.bus.test_trial_boot import FIRMWARE, record
from tests.conftest import wait_for
from tests.gateway.mosquitto import Broker, Received, Subscriber, publish_once
from tests.gateway.otafleet import (
    TOKEN,
    BundleServer,
    Keys,
    bundle,
    make_keys,
    make_release,
    sha256,
)

GW = "gw-ota"
NODES = [(1, "fire", "fire-1"), (2, "fire", "fire-2"), (3, "flood", "flood-3")]
ADDRESS = {dev: a for a, _, dev in NODES}
CHUNK = 4096  # bytes "moved" per bus transaction: the 146 KB app in ~36


# -- the pure rule after the commit -----------------------------------------------------------
NEW, OLD = (1, 4, 0), (0, 1, 0)


@pytest.mark.parametrize(("phase", "boot_at_commit", "view", "expected"), [
    # committed, the node has not rebooted yet: nothing to say
    ("committed", 5, NodeView(OLD, False, False, 5), None),
    # it rebooted into the release on trial
    ("committed", 5, NodeView(NEW, True, False, 6), ("trial", "")),
    # trial seen even before any boot counter is known (a restart of the gateway in between)
    ("committed", None, NodeView(NEW, True, False, 9), ("trial", "")),
    # it came back on the old image, bit 7 set: the trial failed
    ("committed", 5, NodeView(OLD, False, True, 8), ("failed", "rolled_back")),
    # came back on the old image without rolling back: it never took the image
    ("committed", 5, NodeView(OLD, False, False, 6), ("failed", "device_refused")),
    # the release without the trial bit after a reboot: confirmed before we looked
    ("committed", 5, NodeView(NEW, False, False, 6), ("confirmed", "")),
    # on trial, still healthy
    ("trial", 5, NodeView(NEW, True, False, 6), None),
    # on trial, then back on the old image
    ("trial", 5, NodeView(OLD, False, True, 9), ("failed", "rolled_back")),
    ("trial", 5, NodeView(OLD, False, False, 9), ("failed", "rolled_back")),
    # phases before the commit are not the poll's business
    ("transferring", 5, NodeView(NEW, True, False, 6), None),
])
def test_after_the_commit_each_poll_says_where_the_node_stands(
        phase: str, boot_at_commit: int | None, view: NodeView,
        expected: tuple[str, str] | None) -> None:
    assert after_commit(phase, NEW, boot_at_commit, view) == expected


def test_the_job_file_survives_a_restart_and_a_damaged_one_resumes_nothing(
        tmp_path: Path) -> None:
    jobs = JobFile(tmp_path / "ota-jobs.json")
    job = OtaJob("fire-1", "17", "c-1", "a" * 64, 1000, "1.4.0", phase="transferring",
                 offset=512, image_size=4096)
    jobs.save({"fire-1": job})
    assert (tmp_path / "ota-jobs.json").stat().st_mode & 0o777 == 0o600
    assert jobs.load() == {"fire-1": job}
    (tmp_path / "ota-jobs.json").write_text('{"v": 1, "jo')
    assert jobs.load() == {}


# -- the rig ----------------------------------------------------------------------------------
@dataclass
class RecordingTransfer:
    """A stand-in for gateway.ota_transfer.send_image: real bus traffic, a remembered offset."""

    sim: SimBus
    pace_s: float = 0.0
    chunk: int = CHUNK
    held: dict[int, int] = field(default_factory=dict)  # address -> bytes the "node" holds
    sent: dict[int, int] = field(default_factory=dict)  # address -> bytes moved in all runs
    calls: list[tuple[int, int]] = field(default_factory=list)  # (address, starting offset)
    active: int = 0
    max_active: int = 0
    stage: Callable[[int], None] | None = None  # at the commit: put the image on the node

    async def __call__(self, bus: Any, address: int, stream: bytes, *,
                       progress: Callable[[int, int], None]) -> None:
        offset = self.held.get(address, 0)  # "reads the device's offset, resumes"
        self.calls.append((address, offset))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            progress(offset, len(stream))
            while offset < len(stream):
                await bus.read_input(address, 0, 16)  # as long on the wire as a small chunk
                step = min(self.chunk, len(stream) - offset)
                offset += step
                self.held[address] = offset
                self.sent[address] = self.sent.get(address, 0) + step
                progress(offset, len(stream))
                if self.pace_s:
                    await asyncio.sleep(self.pace_s)
            if self.stage is not None:
                self.stage(address)
                await bus.write_register(address, 0, 2)  # reboot into the staged image
        finally:
            self.active -= 1


def pack(release: Path) -> bytes:
    """The image stream stand-in: every file of the release, in order."""
    return b"".join(p.read_bytes() for p in sorted(release.rglob("*")) if p.is_file())


def stage_image(sim: SimBus, version: tuple[int, int, int],
                broken: bool = False) -> Callable[[int], None]:
    """What the node's installer does at the commit: slot b holds the new app, pending."""
    def stage(address: int) -> None:
        root = next(n for n in sim.nodes if n.address == address).root
        slot = root / "b" / "app"
        shutil.rmtree(slot, ignore_errors=True)
        shutil.copytree(FIRMWARE / "app", slot)
        (slot / "version.py").write_text(f"VERSION = {tuple(version)!r}\n")
        if broken:
            node_py = slot / "node.py"
            node_py.write_text('raise ImportError("no module named app.lost")\n'
                               + node_py.read_text())
        (root / "slots.json").write_bytes(record({"active": "a", "previous": None,
                                                  "pending": "b"}))
    return stage


class GatewayThread:
    """An in-process gateway (so the transfer can be injected) on its own event loop."""

    def __init__(self, config: Path, transfer: RecordingTransfer) -> None:
        self.config, self.transfer = config, transfer
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.gateway: Gateway | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        wait_for(lambda: self.gateway is not None or self.error, 20, what="the gateway")
        if self.error:
            raise self.error

    def _main(self) -> None:
        async def main() -> None:
            self.loop, self.stop_event = asyncio.get_running_loop(), asyncio.Event()
            self.gateway = Gateway(load_config(self.config), ota_transfer=self.transfer,
                                   ota_packer=pack)
            await self.gateway.run(self.stop_event)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test
            self.error = exc

    def stop(self) -> None:
        if self.loop is not None and self.stop_event is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)
        assert not self.thread.is_alive(), "the gateway did not stop"
        if self.error:
            raise self.error


@dataclass
class Rig:
    tmp: Path
    sim: SimBus
    feed: PhysicsFeed
    broker: Broker
    keys: Keys
    server: BundleServer
    transfer: RecordingTransfer
    config: Path
    gateway: GatewayThread | None = None
    releases: dict[str, bytes] = field(default_factory=dict)

    def start(self, sub: Subscriber) -> None:
        """Start the gateway; return once it is online, i.e. listening for commands."""
        first = len(sub.messages)
        self.gateway = GatewayThread(self.config, self.transfer)
        sub.wait_for(lambda ms: any(m.topic == f"edgefleet/v1/{GW}/status"
                                    and _body(m)["online"] for m in ms[first:]), 30,
                     "the gateway online")

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None

    def serve(self, name: str, version: tuple[int, int, int] = (1, 4, 0),
              device_class: str = "fire", data: bytes | None = None) -> bytes:
        if data is None:
            rel_dir = make_release(self.tmp / "releases" / name, self.keys, version=version,
                                   device_class=device_class)
            data = bundle(rel_dir)
        self.server.bundles[name] = data
        return data

    def ota(self, device: str, name: str, *, campaign: str = "17", release: str = "1.4.0",
            cmd_id: str | None = None, **overrides: Any) -> None:
        data = self.server.bundles.get(name, b"")
        body = {"v": 1, "id": cmd_id or f"c-{device}-{name}", "op": "start",
                "campaign": campaign, "release": release, "url": self.server.url(name),
                "token": TOKEN, "sha256": sha256(data), "size": len(data) or 1, **overrides}
        publish_once(self.broker, command_topic(GW, device, "ota"), json.dumps(body).encode())

    def cancel(self, device: str, campaign: str = "17") -> None:
        body = {"v": 1, "id": f"x-{device}", "op": "cancel", "campaign": campaign}
        publish_once(self.broker, command_topic(GW, device, "ota"), json.dumps(body).encode())


def _config(rig_tmp: Path, port: str, broker: Broker, trust: Path, extra: str = "") -> str:
    devices = "\n".join(f'[[bus.device]]\naddress = {a}\nclass = "{c}"\nid = "{i}"\n'
                        for a, c, i in NODES)
    return f"""
[gateway]
id = "{GW}"
storage = "{rig_tmp / 'state'}"
confirm_trial_after_s = 2

[mqtt]
host = "{broker.host}"
port = {broker.port}
tls = false

[ota]
trust = "{trust}"
offer_jitter_s = 0
progress_interval_s = 0.5
download_retries = 1
boot_timeout_s = 40
device_timeout_s = 30
{extra}

[[bus]]
name = "riser"
type = "rtu"
port = "{port}"
timeout_s = 0.3

{devices}
"""


@pytest.fixture
def rig(tmp_path: Path, broker: Broker) -> Iterator[Rig]:
    sim = SimBus([(a, c) for a, c, _ in NODES])
    feed = attach_physics(sim)
    sim.start()
    keys = make_keys(tmp_path / "keys")
    server = BundleServer()
    config = tmp_path / "gateway.toml"
    config.write_text(_config(tmp_path, sim.master_path, broker, keys.trust))
    r = Rig(tmp_path, sim, feed, broker, keys, server, RecordingTransfer(sim), config)
    yield r
    with contextlib.suppress(AssertionError):
        r.stop()
    server.close()
    sim.stop()


def _body(m: Received) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(m.payload)
    return body


def ota_events(messages: list[Received], device: str) -> list[dict[str, Any]]:
    """The device's OtaEvents, each checked against the contract (epoch and seq included)."""
    out = []
    for m in messages:
        if m.topic == f"edgefleet/v1/{GW}/{device}/event" and _body(m).get("event") == "ota":
            parse_payload("event", m.payload)
            OtaEvent.model_validate_json(m.payload)
            out.append(_body(m))
    return out


def phases(messages: list[Received], device: str) -> list[str]:
    return [e["phase"] for e in ota_events(messages, device)]


def acks(messages: list[Received]) -> dict[str, dict[str, Any]]:
    return {_body(m)["id"]: _body(m) for m in messages if m.topic == f"edgefleet/v1/{GW}/ack"}


def reached(device: str, phase: str) -> Callable[[list[Received]], bool]:
    return lambda ms: phase in phases(ms, device)


# -- the tests --------------------------------------------------------------------------------
def test_a_signed_update_is_transferred_booted_on_trial_and_confirmed(rig: Rig) -> None:
    rig.serve("fire-1.4.0")
    rig.transfer.stage = stage_image(rig.sim, (1, 4, 0))
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-1", "fire-1.4.0", cmd_id="c-812")
        got = sub.wait_for(reached("fire-1", "confirmed"), 90, "fire-1 confirmed")
        # the same command again re-reports where the delivery stands, and fetches nothing
        rig.ota("fire-1", "fire-1.4.0", cmd_id="c-812-again")
        again = sub.wait_for(lambda ms: phases(ms, "fire-1").count("confirmed") == 2
                             and "c-812-again" in acks(ms), 20, "the re-report")
    assert acks(got)["c-812"]["ok"] is True and acks(again)["c-812-again"]["ok"] is True
    seen = phases(got, "fire-1")
    assert [p for p in seen if p != "transferring"] == [
        "accepted", "downloading", "verified", "committed", "trial", "confirmed"], seen
    events = ota_events(got, "fire-1")
    assert all(e["release"] == "1.4.0" and e["campaign"] == "17" for e in events)
    assert events[-1]["offset"] == events[-1]["size"] > 0
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len({e["epoch"] for e in events}) == 1
    # the trial_confirmed event goes out beside it, as for any confirmed trial
    assert any(_body(m).get("event") == "trial_confirmed" and _body(m)["firmware"] == "1.4.0"
               for m in got if m.topic == f"edgefleet/v1/{GW}/event")
    assert len(rig.server.requests) == 1
    assert len(rig.transfer.calls) == 1


def test_a_tampered_bundle_a_wrong_hash_and_a_dead_fleet_are_never_relayed(rig: Rig) -> None:
    good = make_release(rig.tmp / "releases" / "good", rig.keys)
    node = good / "files" / "app" / "node.py"
    node.write_bytes(node.read_bytes().replace(b"def ", b"def\t", 1))  # after signing
    rig.serve("tampered", data=bundle(good))
    data = rig.serve("honest")
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-1", "tampered")
        rig.ota("fire-2", "honest", sha256="0" * 64)  # the command's hash is not the bundle's
        got = sub.wait_for(lambda ms: reached("fire-1", "failed")(ms)
                           and reached("fire-2", "failed")(ms), 30, "both refused")
        rig.server.close()  # the fleet goes away
        rig.ota("flood-3", "honest", sha256=sha256(data), size=len(data))
        got = sub.wait_for(reached("flood-3", "failed"), 30, "the download given up")
    fire1, fire2, flood3 = (ota_events(got, d)[-1] for d in ("fire-1", "fire-2", "flood-3"))
    assert fire1["reason"] == "bad_hash" and "node.py" in fire1["detail"]
    assert fire2["reason"] == "bad_hash"
    assert flood3["reason"] == "download"
    assert phases(got, "flood-3") == ["accepted", "downloading", "failed"]
    assert rig.transfer.calls == [], "nothing unverified reached a node"
    assert not any((rig.tmp / "state" / "ota-cache").glob("*/manifest.json"))
    assert all(a["ok"] for a in acks(got).values())  # taken; the refusal is the event's


def test_a_bad_command_is_refused_in_its_ack(rig: Rig) -> None:
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        publish_once(rig.broker, command_topic(GW, "fire-1", "ota"), json.dumps(
            {"v": 1, "id": "c-bad", "op": "start", "campaign": "17", "url": "http://x",
             "sha256": "not-hex", "size": 3}).encode())
        got = sub.wait_for(lambda ms: "c-bad" in acks(ms), 20, "the ack")
    ack = acks(got)["c-bad"]
    assert ack["ok"] is False and "sha256" in ack["error"]
    assert not ota_events(got, "fire-1")


def test_two_nodes_on_one_bus_take_turns_and_the_bundle_is_fetched_once(rig: Rig) -> None:
    rig.serve("fire-1.4.0")
    rig.transfer.pace_s = 0.1
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-1", "fire-1.4.0")
        rig.ota("fire-2", "fire-1.4.0")
        got = sub.wait_for(lambda ms: reached("fire-1", "committed")(ms)
                           and reached("fire-2", "committed")(ms), 90, "both committed")
    assert rig.transfer.max_active == 1
    second = phases(got, "fire-2")
    assert "queued" in second and second.index("queued") < second.index("transferring")
    order = [(e["device"], e["phase"]) for m in got for e in [_body(m)]
             if e.get("event") == "ota" and e["phase"] in ("transferring", "committed")]
    first_done = order.index(("fire-1", "committed"))
    assert ("fire-2", "transferring") not in order[:first_done]
    assert len(rig.server.requests) == 1, "the second node got the cached, verified bundle"


def test_a_cancel_stops_the_transfer_and_frees_the_bus(rig: Rig) -> None:
    rig.serve("fire-1.4.0")
    rig.transfer.pace_s = 0.2
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-1", "fire-1.4.0")
        sub.wait_for(lambda ms: any(e["offset"] > 0 for e in ota_events(ms, "fire-1")), 30,
                     "fire-1 transferring")
        rig.cancel("fire-1")
        got = sub.wait_for(reached("fire-1", "cancelled"), 20, "the cancel")
        held = rig.transfer.held[1]
        time.sleep(1.0)
        assert rig.transfer.held[1] == held, "the transfer went on after the cancel"
        rig.ota("fire-2", "fire-1.4.0")
        got = sub.wait_for(reached("fire-2", "transferring"), 30, "fire-2 gets the bus")
    assert "queued" not in phases(got, "fire-2")
    assert phases(got, "fire-1")[-1] == "cancelled"
    assert acks(got)["x-fire-1"]["ok"] is True


def test_a_transfer_cut_by_a_gateway_restart_resumes_from_the_nodes_offset(rig: Rig) -> None:
    data = rig.serve("fire-1.4.0")
    rig.transfer.pace_s = 0.2
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-1", "fire-1.4.0")
        sub.wait_for(lambda ms: any(e["offset"] >= 4 * CHUNK for e in ota_events(ms, "fire-1")),
                     30, "fire-1 part-way")
        rig.stop()
        saved = json.loads((rig.tmp / "state" / "ota-jobs.json").read_text())["jobs"]["fire-1"]
        assert saved["phase"] == "transferring" and saved["token"] is None
        cut_at = rig.transfer.held[1]
        before = len(sub.messages)
        rig.start(sub)
        got = sub.wait_for(reached("fire-1", "committed"), 90, "fire-1 committed")
    after = ota_events(got[before:], "fire-1")
    assert after[0]["phase"] == "transferring" and after[0]["offset"] >= cut_at > 0
    assert rig.transfer.calls == [(1, 0), (1, cut_at)]
    assert rig.transfer.sent[1] == after[-1]["size"], "resumed, never started again from zero"
    assert len(rig.server.requests) == 1  # the bundle came from the cache
    assert data and phases(got, "fire-1").count("accepted") == 1
    seqs = [e["seq"] for e in ota_events(got, "fire-1")]
    assert all(a < b for a, b in itertools.pairwise(seqs)), "seq goes on after the restart"


def test_a_fire_alarm_raised_mid_transfer_goes_out_with_normal_latency(rig: Rig) -> None:
    rig.serve("fire-1.4.0")
    rig.transfer.chunk = 128  # a transfer that wants the bus all the time, for a minute
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-2", "fire-1.4.0")
        sub.wait_for(lambda ms: any(e["offset"] > 0 for e in ota_events(ms, "fire-2")), 30,
                     "fire-2 transferring")
        rig.feed.apply(1, "ignite", {"growth": 1.0})
        crossed = wait_for(lambda: rig.feed.truth(1)["smoke"] > 4.0 and time.monotonic(), 60,
                           what="the smoke in room 1 to pass 4 %/m")
        assert isinstance(crossed, float)
        sub.wait_for(lambda ms: any(_body(m).get("state") == "raised" for m in ms
                                    if m.topic == f"edgefleet/v1/{GW}/fire-1/alarm"), 30,
                     "the fire alarm")
        raised_at = time.monotonic()
        offset_at_alarm = rig.transfer.held.get(2, 0)
        got = sub.wait_for(lambda ms: any(e["offset"] > offset_at_alarm
                                          for e in ota_events(ms, "fire-2")), 30,
                           "the transfer going on")
    # the same bound as the fire test without a transfer (test_gateway_e2e)
    assert raised_at - crossed < 6.0, f"alarm {raised_at - crossed:.1f}s after the smoke"
    assert 0 < offset_at_alarm < ota_events(got, "fire-2")[-1]["size"], \
        "the alarm came while the transfer was running"


def test_a_node_that_rolls_back_fails_the_delivery_with_rolled_back(rig: Rig) -> None:
    rig.serve("fire-1.4.0")
    rig.transfer.stage = stage_image(rig.sim, (1, 4, 0), broken=True)
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-1", "fire-1.4.0")
        got = sub.wait_for(reached("fire-1", "failed"), 120, "the delivery's end")
    last = ota_events(got, "fire-1")[-1]
    assert last["reason"] == "rolled_back", last
    assert "confirmed" not in phases(got, "fire-1")


def test_a_node_that_never_boots_the_image_times_out(rig: Rig) -> None:
    rig.config.write_text(rig.config.read_text().replace("boot_timeout_s = 40",
                                                         "boot_timeout_s = 3"))
    rig.serve("fire-1.4.0")
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-1", "fire-1.4.0")
        got = sub.wait_for(reached("fire-1", "failed"), 60, "the time-out")
    assert ota_events(got, "fire-1")[-1]["reason"] == "timeout"
    assert phases(got, "fire-1")[-2] == "committed"
