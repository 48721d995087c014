"""Firmware delivery as the fleet and the field see it: the ``ota`` command against a real
Mosquitto, real firmware nodes on a simulated RS-485 bus receiving images through their OTA
register window (gateway.ota_transfer), a fleet-like HTTP server and releases signed with
provisioning.release; progress read back as OtaEvents by a plain subscriber.

The gateway runs in this process (its own thread and event loop) so a test can stop and start
it at a chosen moment; test_ota_e2e.py runs it as `edgefleet gateway run`. Nothing is injected:
every fault here (a refused bundle, a busy bus, a cancel, a restart, a fire, a crashing trial, a
node that dies) is one a real node or a real fleet produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from contracts.mqtt import OtaEvent, command_topic, parse_payload
from gateway.config import load_config
from gateway.ota import JobFile, NodeView, OtaJob, after_commit
from gateway.service import Gateway
from hardware.sim.simbus import SimBus
from hardware.sim.simrun import PhysicsFeed, attach_physics
from tests.conftest import wait_for
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

GW = "gw-ota"
NODES = [(1, "fire", "fire-1"), (2, "fire", "fire-2"), (3, "flood", "flood-3")]
ADDRESS = {dev: a for a, _, dev in NODES}


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
class GatewayThread:
    """An in-process gateway on its own event loop (the real transfer: nothing injected)."""

    def __init__(self, config: Path) -> None:
        self.config = config
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
            self.gateway = Gateway(load_config(self.config))
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
    config: Path
    gateway: GatewayThread | None = None

    def start(self, sub: Subscriber) -> None:
        """Start the gateway; return once it is online, i.e. listening for commands."""
        first = len(sub.messages)
        self.gateway = GatewayThread(self.config)
        sub.wait_for(lambda ms: any(m.topic == f"edgefleet/v1/{GW}/status"
                                    and _body(m)["online"] for m in ms[first:]), 30,
                     "the gateway online")

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None

    def serve(self, name: str, *, version: tuple[int, int, int] = (1, 4, 0),
              device_class: str = "fire", broken: bool = False, tiny: bool = False,
              data: bytes | None = None) -> bytes:
        """A signed release served as ``name``: the app (``tiny``: a few hundred bytes whose
        trial crashes; ``broken``: the whole app, crashing)."""
        if data is None:
            source = app_source(self.tmp / "src" / name, version, broken=broken, tiny=tiny)
            data = bundle(make_release(self.tmp / "releases" / name, self.keys,
                                       version=version, device_class=device_class,
                                       source=source))
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


def _config(rig_tmp: Path, port: str, baud: int, broker: Broker, trust: Path) -> str:
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
boot_timeout_s = 60
device_timeout_s = 30

[[bus]]
name = "riser"
type = "rtu"
port = "{port}"
baudrate = {baud}
timeout_s = 0.3

{devices}
"""


RigFactory = Callable[..., Rig]


@pytest.fixture
def make_rig(tmp_path: Path, broker: Broker) -> Iterator[RigFactory]:
    made: list[Rig] = []

    def make(baud: int = 115200, **ota: Any) -> Rig:
        sim = SimBus([(a, c) for a, c, _ in NODES], baud=baud,
                     node_options={a: {"board": BOARD} for a, _, _ in NODES})
        keys = make_keys(tmp_path / "keys")
        flash_trust(sim, keys)
        feed = attach_physics(sim)
        sim.start()
        config = tmp_path / "gateway.toml"
        text = _config(tmp_path, sim.master_path, baud, broker, keys.trust)
        for key, value in ota.items():
            text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
        config.write_text(text)
        rig = Rig(tmp_path, sim, feed, broker, keys, BundleServer(), config)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        with contextlib.suppress(AssertionError):
            rig.stop()
        rig.server.close()
        rig.sim.stop()


@pytest.fixture
def rig(make_rig: RigFactory) -> Rig:
    return make_rig()


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


def moved(device: str, beyond: int) -> Callable[[list[Received]], bool]:
    return lambda ms: any(e["offset"] > beyond for e in ota_events(ms, device)
                          if e["phase"] == "transferring")


def node_status(messages: list[Received], device: str) -> list[str]:
    states = [_body(m) for m in messages if m.topic == f"edgefleet/v1/{GW}/{device}/state"]
    return list(states[-1]["status"]) if states else []


# -- the tests --------------------------------------------------------------------------------
def test_a_tampered_bundle_a_wrong_hash_and_a_dead_fleet_are_never_relayed(rig: Rig) -> None:
    source = app_source(rig.tmp / "src" / "good", (1, 4, 0), tiny=True)
    good = make_release(rig.tmp / "releases" / "good", rig.keys, source=source)
    node = good / "files" / "app" / "node.py"
    node.write_bytes(node.read_bytes().replace(b"raise", b"Raise", 1))  # after signing
    rig.serve("tampered", data=bundle(good))
    data = rig.serve("honest", tiny=True)
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
    for device in ("fire-1", "fire-2", "flood-3"):  # nothing unverified reached a node
        assert "transferring" not in phases(got, device)
    for node in rig.sim.nodes:
        assert not (node.root / "data" / "ota.json").exists(), "a node was offered an image"
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
    rig.serve("tiny", tiny=True)
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-1", "tiny")
        rig.ota("fire-2", "tiny")
        got = sub.wait_for(lambda ms: reached("fire-1", "committed")(ms)
                           and reached("fire-2", "committed")(ms), 90, "both committed")
    second = phases(got, "fire-2")
    assert "queued" in second and second.index("queued") < second.index("transferring")
    order = [(e["device"], e["phase"]) for m in got for e in [_body(m)]
             if e.get("event") == "ota" and e["phase"] in ("transferring", "committed")]
    first_done = order.index(("fire-1", "committed"))
    assert ("fire-2", "transferring") not in order[:first_done], order
    assert len(rig.server.requests) == 1, "the second node got the cached, verified bundle"


def test_a_cancel_stops_the_transfer_and_frees_the_bus(rig: Rig) -> None:
    rig.serve("fire-1.4.0")
    rig.serve("tiny", tiny=True)
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-1", "fire-1.4.0")
        sub.wait_for(moved("fire-1", 0), 60, "fire-1 transferring")
        sub.wait_for(lambda ms: "ota" in node_status(ms, "fire-1"), 20, "fire-1's ota bit")
        rig.cancel("fire-1")
        got = sub.wait_for(reached("fire-1", "cancelled"), 20, "the cancel")
        rig.ota("fire-2", "tiny")
        got = sub.wait_for(lambda ms: reached("fire-2", "committed")(ms)
                           and "ota" not in node_status(ms, "fire-1"), 60,
                           "fire-2 served, fire-1 aborted")
    assert "queued" not in phases(got, "fire-2"), "the cancelled transfer kept the bus"
    assert phases(got, "fire-1")[-1] == "cancelled"
    assert acks(got)["x-fire-1"]["ok"] is True
    last = ota_events(got, "fire-1")[-1]
    assert 0 < last["offset"] < last["size"]


def test_a_transfer_cut_by_a_gateway_restart_resumes_from_the_nodes_offset(rig: Rig) -> None:
    rig.serve("fire-1.4.0")
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-1", "fire-1.4.0")
        got = sub.wait_for(moved("fire-1", 20_000), 60, "fire-1 part-way")
        assert rig.gateway is not None and rig.gateway.gateway is not None
        health = rig.gateway.gateway.health()["ota"]
        assert health["fire-1"]["phase"] == "transferring" and health["fire-1"]["offset"] > 0
        rig.stop()
        saved = json.loads((rig.tmp / "state" / "ota-jobs.json").read_text())["jobs"]["fire-1"]
        assert saved["phase"] == "transferring" and saved["token"] is None
        reported = max(e["offset"] for e in ota_events(got, "fire-1"))
        before = len(sub.messages)
        rig.start(sub)
        got = sub.wait_for(reached("fire-1", "committed"), 120, "fire-1 committed")
    after = ota_events(got[before:], "fire-1")
    assert after[0]["phase"] == "transferring"
    assert after[0]["offset"] >= reported > 0, "resumed from the node's offset, not from zero"
    assert after[-1]["phase"] == "committed" and after[-1]["offset"] == after[-1]["size"]
    assert len(rig.server.requests) == 1  # the bundle came from the cache
    assert phases(got, "fire-1").count("accepted") == 1
    seqs = [e["seq"] for e in ota_events(got, "fire-1")]
    assert all(a < b for a, b in itertools.pairwise(seqs)), "seq goes on after the restart"


def fire_polls_per_s(rig: Rig, seconds: float) -> float:
    """fire-1's polls per second over ``seconds``, counted by the gateway's poller."""
    assert rig.gateway is not None and rig.gateway.gateway is not None
    device = rig.gateway.gateway.pollers["riser"].devices["fire-1"]
    first = device.polls
    time.sleep(seconds)
    return (device.polls - first) / seconds


def test_a_fire_alarm_raised_mid_transfer_goes_out_with_normal_latency(
        make_rig: RigFactory) -> None:
    rig = make_rig(baud=19200)  # the default line: a 146 KB image takes minutes on it
    rig.serve("fire-1.4.0")
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        sub.wait_for(lambda ms: any(m.topic == f"edgefleet/v1/{GW}/fire-1/telemetry"
                                    for m in ms), 30, "fire-1 polled")
        quiet_rate = fire_polls_per_s(rig, 3.0)
        rig.ota("fire-2", "fire-1.4.0")
        sub.wait_for(moved("fire-2", 0), 60, "fire-2 transferring")
        before = max(e["offset"] for e in ota_events(sub.messages, "fire-2"))
        busy_rate = fire_polls_per_s(rig, 3.0)
        sub.wait_for(moved("fire-2", before), 30, "the transfer going on meanwhile")
        rig.feed.apply(1, "ignite", {"growth": 1.0})
        crossed = wait_for(lambda: rig.feed.truth(1)["smoke"] > 4.0 and time.monotonic(), 60,
                           what="the smoke in room 1 to pass 4 %/m")
        assert isinstance(crossed, float)
        sub.wait_for(lambda ms: any(_body(m).get("state") == "raised" for m in ms
                                    if m.topic == f"edgefleet/v1/{GW}/fire-1/alarm"), 30,
                     "the fire alarm")
        raised_at = time.monotonic()
        at_alarm = max(e["offset"] for e in ota_events(sub.messages, "fire-2"))
        got = sub.wait_for(moved("fire-2", at_alarm), 30, "the transfer going on")
    # fire-1 kept its poll rate beside the transfer, and its alarm kept the same bound as
    # the fire test without a transfer (test_gateway_e2e)
    assert busy_rate >= 0.8 * quiet_rate, (quiet_rate, busy_rate)
    assert raised_at - crossed < 6.0, f"alarm {raised_at - crossed:.1f}s after the smoke"
    assert "committed" not in phases(got, "fire-2"), "the alarm came while the transfer ran"


def test_a_slow_sd_card_saving_the_jobs_never_holds_up_fire_polling(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job file save that hangs on the card (here: until the test lets it go) must not stop
    the poller: the save runs beside the event loop, not on it."""
    entered, released = threading.Event(), threading.Event()
    real_save = JobFile.save

    def stuck_save(self: JobFile, jobs: Any) -> None:
        entered.set()
        released.wait(30)
        real_save(self, jobs)

    monkeypatch.setattr(JobFile, "save", stuck_save)
    rig.serve("tiny", tiny=True)
    try:
        with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
            rig.start(sub)
            assert rig.gateway is not None and rig.gateway.gateway is not None
            fire1 = rig.gateway.gateway.pollers["riser"].devices["fire-1"]
            rig.ota("fire-2", "tiny")
            assert entered.wait(20), "the job was never saved"
            polls = fire1.polls
            wait_for(lambda: fire1.polls >= polls + 3, 15,
                     what="fire-1 polled three times while the job file save hangs")
            assert not released.is_set()
            released.set()
            got = sub.wait_for(reached("fire-2", "committed"), 60, "fire-2 committed")
            # the saves held back meanwhile end with the latest state on the card
            jobs = JobFile(rig.tmp / "state" / "ota-jobs.json")
            wait_for(lambda: jobs.load().get("fire-2", OtaJob("", "", "", "", 0)).phase
                     in ("committed", "trial", "failed"), 20, what="the job file caught up")
    finally:
        released.set()
    assert phases(got, "fire-2")[0] == "accepted"


def test_a_cancel_during_the_nodes_verify_boot_is_refused_and_the_trial_decides(
        rig: Rig) -> None:
    """From the commit write on the node boots the image whatever the gateway does: a cancel
    that arrives while the node verifies it at its reboot is answered ok:false."""
    rig.serve("tiny", tiny=True)  # its trial crashes: the node rolls back on its own
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-1", "tiny")
        sub.wait_for(reached("fire-1", "committed"), 60, "fire-1 committed")
        # the node goes quiet on the bus for its verify boot (as on a slow flash): the
        # gateway still waits for the verification result when the cancel comes
        rig.sim.hub.faults.dead_ports.add(1)
        assert rig.gateway is not None and rig.gateway.gateway is not None
        manager = rig.gateway.gateway.ota
        assert manager is not None
        rig.cancel("fire-1")
        got = sub.wait_for(lambda ms: "x-fire-1" in acks(ms), 20, "the cancel's ack")
        verifying = "fire-1" in manager._verifying
        rig.sim.hub.faults.dead_ports.discard(1)
        got = sub.wait_for(reached("fire-1", "failed"), 120, "the trial's verdict")
    ack = acks(got)["x-fire-1"]
    assert ack["ok"] is False and "already committed" in ack["error"], ack
    assert verifying, "the cancel came after the verification, not during it"
    assert "cancelled" not in phases(got, "fire-1")
    assert ota_events(got, "fire-1")[-1]["reason"] == "rolled_back"


def test_a_release_that_crashes_on_trial_rolls_back_and_fails_the_delivery(rig: Rig) -> None:
    rig.serve("tiny", tiny=True)
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-1", "tiny")
        got = sub.wait_for(reached("fire-1", "failed"), 120, "the delivery's end")
        # the poll that showed it goes to the rules first, then out as the node's state
        got = sub.wait_for(lambda ms: "rolled_back" in node_status(ms, "fire-1"), 20,
                           "fire-1's state saying rolled_back")
    last = ota_events(got, "fire-1")[-1]
    assert last["reason"] == "rolled_back", last
    assert "committed" in phases(got, "fire-1") and "confirmed" not in phases(got, "fire-1")


def test_a_node_that_dies_mid_transfer_times_out(make_rig: RigFactory) -> None:
    rig = make_rig(device_timeout_s=4)
    rig.serve("fire-1.4.0")
    with Subscriber(rig.broker, f"edgefleet/v1/{GW}/#") as sub:
        rig.start(sub)
        rig.ota("fire-1", "fire-1.4.0")
        sub.wait_for(moved("fire-1", 0), 60, "fire-1 transferring")
        rig.sim.node(1).stop()  # its power is cut for good
        got = sub.wait_for(reached("fire-1", "failed"), 60, "the time-out")
    last = ota_events(got, "fire-1")[-1]
    assert last["reason"] == "timeout" and 0 < last["offset"] < last["size"], last
