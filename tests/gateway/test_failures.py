"""The gateway under the faults of the field, named as an operator would say them.

Each test runs the real gateway (``edgefleet gateway run`` in its own process) against real
neighbours: firmware nodes on simulated RS-485 buses (``hardware.sim``), a fire panel's printer
port on a pseudo-terminal, a real Mosquitto, a real full filesystem (tmpfs), and waits on what
the fleet would see (retained states, alarms, events), not on fixed sleeps.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hardware.sim.simbus import SimBus
from hardware.sim.simrun import PhysicsFeed, attach_physics
from tests.conftest import wait_for
from tests.gateway.mosquitto import Broker, Received, Subscriber, free_port

GW = "gw-fail"


# --------------------------------------------------------------------------- the rig

def device(address: int, cls: str, dev_id: str, poll: str = "") -> str:
    extra = f"\npoll = {{ {poll} }}" if poll else ""
    return (f'[[bus.device]]\naddress = {address}\nclass = "{cls}"\nid = "{dev_id}"\n'
            f'location = "room {address}"{extra}\n')


def rtu_bus(name: str, port: str, devices: list[str], timeout_s: float = 0.3) -> str:
    return (f'[[bus]]\nname = "{name}"\ntype = "rtu"\nport = "{port}"\ntimeout_s = {timeout_s}\n\n'
            + "\n".join(devices))


SIREN_RULE = """
[[rule]]
name = "fire sounds the siren"
when = { class = "fire", site_any = true, alarm = "any" }
then = { device = "siren-9", coil = 0, value = true }
release = "manual"
"""


@dataclass
class Gateway:
    """One gateway process and its config, storage and log."""

    workdir: Path
    broker: Broker
    storage: Path
    gateway_extra: str = ""
    body: str = ""
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.workdir / "gateway.toml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    def write(self) -> None:
        self.config.write_text(f"""
[gateway]
id = "{GW}"
storage = "{self.storage}"
{self.gateway_extra}

[mqtt]
host = "{self.broker.host}"
port = {self.broker.port}
tls = false

{self.body}
""")

    def start(self) -> None:
        self.write()
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgefleet.cli", "-v", "gateway", "run", str(self.config)],
                stdout=subprocess.DEVNULL, stderr=log_file)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> float:
        """SIGTERM; returns how long the process took to exit."""
        assert self.proc is not None
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        return time.monotonic() - t

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def gateway(tmp_path: Path, broker: Broker) -> Iterator[Gateway]:
    gw = Gateway(tmp_path, broker, tmp_path / "state")
    yield gw
    gw.kill()


@pytest.fixture
def sims() -> Iterator[list[SimBus]]:
    started: list[SimBus] = []
    yield started
    for sim in started:
        sim.stop()


def start_sim(sims: list[SimBus], nodes: list[tuple[int, str]]) -> tuple[SimBus, PhysicsFeed]:
    sim = SimBus(nodes)
    feed = attach_physics(sim)
    sim.start()
    sims.append(sim)
    return sim, feed


def body(m: Received) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(m.payload)
    return data


def of(messages: list[Received], dev: str, channel: str) -> list[dict[str, Any]]:
    return [body(m) for m in messages if m.topic == f"edgefleet/v1/{GW}/{dev}/{channel}"]


def of_events(messages: list[Received]) -> list[dict[str, Any]]:
    return [body(m) for m in messages if m.topic == f"edgefleet/v1/{GW}/event"]


def states(messages: list[Received], dev: str) -> list[bool]:
    return [s["online"] for s in of(messages, dev, "state")]


def siren_on(sim: SimBus, address: int = 9) -> bool:
    return sim.node(address).events.outputs[:1] == [1]


def ignite(feed: PhysicsFeed, sim: SimBus, address: int = 1) -> None:
    feed.apply(address, "ignite", {"growth": 1.0})


# --------------------------------------------------------------------------- fire panel

def test_a_restore_on_the_fire_panel_clears_its_alarm_at_the_fleet(
        gateway: Gateway, broker: Broker) -> None:
    master, slave = os.openpty()
    try:
        import tty
        tty.setraw(master)
        gateway.body = f"""
[[serial_input]]
name = "facp"
port = "{os.ttyname(slave)}"
profile = "notifier"
device_id = "facp-1"
location = "lobby"
"""
        lines = [
            "FIRE ALARM  SMOKE(PHOTO)  3RD FLOOR CORRIDOR            Z003  02:03P 111226 1D012",
            "TROUBL      SMOKE(PHOTO)  5TH FLOOR LOBBY   OPEN CIRCUIT Z005  02:05P 111226 1D002",
            "SUPERVISORY VALVE TAMPER  RISER B                       Z007  02:06P 111226 1M004",
            "CLR TBL     SMOKE(PHOTO)  5TH FLOOR LOBBY               Z005  02:09P 111226 1D002",
            "CLR ALM     SMOKE(PHOTO)  3RD FLOOR CORRIDOR            Z003  02:10P 111226 1D012",
            "CLR SUP     VALVE TAMPER  RISER B                       Z007  02:12P 111226 1M004",
        ]
        with Subscriber(broker, f"edgefleet/v1/{GW}/facp-1/alarm") as sub:
            gateway.start()
            wait_for(lambda: "reading panel events" in gateway.log(), 20,
                     what="the gateway to open the panel port")
            os.write(master, ("\r\n".join(lines) + "\r\n").encode())
            got = sub.wait_for(lambda ms: len(ms) >= 6, 20, "three raises and three clears")
        alarms = [body(m) for m in got]
        raised = {a["type"]: a["alarm_id"] for a in alarms if a["state"] == "raised"}
        cleared = {a["type"]: a["alarm_id"] for a in alarms if a["state"] == "cleared"}
        assert set(raised) == {"fire", "fault", "supervisory"}
        assert cleared == raised, "each restore clears its alarm under the id it was raised with"
        assert len(set(raised.values())) == 3
        assert gateway.stop() < 5
    finally:
        os.close(master)
        os.close(slave)


# --------------------------------------------------------------------------- bad replies

@pytest.mark.parametrize("mode", ["short", "function"])
def test_a_node_answering_with_a_bad_reply_is_that_nodes_fault(
        gateway: Gateway, broker: Broker, sims: list[SimBus], mode: str) -> None:
    sim, _ = start_sim(sims, [(1, "fire"), (2, "flood")])
    port = free_port()
    gateway.gateway_extra = f"metrics_port = {port}"
    gateway.body = rtu_bus("riser", sim.master_path, [
        device(1, "fire", "fire-1", "telemetry_ms = 1000"), device(2, "flood", "flood-2")])
    with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
        gateway.start()
        sub.wait_for(lambda ms: True in states(ms, "flood-2"), 20, "flood-2 online")
        sim.hub.faults.bad_replies[2] = mode  # a firmware bug on node 2's side
        sub.wait_for(lambda ms: states(ms, "flood-2")[-1] is False, 20,
                     "flood-2 reported offline for its bad replies")
        reason = of(sub.messages, "flood-2", "state")[-1]["reason"]
        assert "protocol fault" in reason and "bad reply" in reason
        # the rest of the bus kept going: fresh telemetry from node 1 after node 2 went bad
        seen = len(of(sub.messages, "fire-1", "telemetry"))
        sub.wait_for(lambda ms: len(of(ms, "fire-1", "telemetry")) >= seen + 2, 20,
                     "fire-1 telemetry after node 2 went bad")
        assert gateway.alive(), "a bad reply from one node must never stop the gateway"
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            scrape = resp.read().decode()
        assert f'edgefleet_device_bad_replies_total{{gateway="{GW}",bus="riser",' \
               f'device="flood-2"}}' in scrape
        sim.hub.faults.bad_replies.clear()
        sub.wait_for(lambda ms: states(ms, "flood-2")[-1] is True, 60, "flood-2 back online")
        assert gateway.stop() < 5
    assert gateway.log().count("protocol fault") <= 3, "bad replies are rate-limited in the log"


# --------------------------------------------------------------------------- the siren

def test_a_siren_write_lost_on_the_line_is_written_again_until_the_siren_sounds(
        gateway: Gateway, broker: Broker, sims: list[SimBus]) -> None:
    sim, feed = start_sim(sims, [(1, "fire"), (9, "flood")])
    gateway.body = rtu_bus("riser", sim.master_path, [
        device(1, "fire", "fire-1"), device(9, "flood", "siren-9")]) + SIREN_RULE
    siren_port = 2  # port 0 is the master, then the nodes in order
    with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
        gateway.start()
        sub.wait_for(lambda ms: True in states(ms, "siren-9"), 20, "siren-9 online")
        sim.hub.faults.dead_ports.add(siren_port)  # the siren's transceiver drops out
        ignite(feed, sim)
        wait_for(lambda: "writing siren-9 failed" in gateway.log(), 30,
                 what="the gateway to find the siren write lost")
        assert not siren_on(sim)
        sim.hub.faults.dead_ports.discard(siren_port)  # the technician reseats the connector
        wait_for(lambda: siren_on(sim), 20, what="the siren to sound once its node hears again")
        sub.wait_for(lambda ms: any(e.get("event") == "rule" for e in of_events(ms)), 10,
                     "the rule's event once the write landed")
        assert gateway.stop() < 5
    assert gateway.log().count("writing siren-9 failed") == 1, "logged once, not per retry"


# --------------------------------------------------------------------------- the disk

@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MB filesystem (tmpfs), so the disk fills as an SD card does."""
    mount = tmp_path / "sd"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem to the last byte; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_still_switches_the_siren(
        gateway: Gateway, broker: Broker, sims: list[SimBus], tiny_disk: Path) -> None:
    sim, feed = start_sim(sims, [(1, "fire"), (9, "flood")])
    gateway.storage = tiny_disk / "state"
    gateway.body = rtu_bus("riser", sim.master_path, [
        device(1, "fire", "fire-1", "telemetry_ms = 300"), device(9, "flood", "siren-9")]
    ) + SIREN_RULE
    with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
        gateway.start()
        sub.wait_for(lambda ms: of(ms, "fire-1", "telemetry"), 20, "fire-1 telemetry")
        filler = fill(tiny_disk)
        wait_for(lambda: "refuses writes" in gateway.log(), 20,
                 what="the gateway to notice the full disk")
        ignite(feed, sim)
        wait_for(lambda: siren_on(sim), 60, what="the siren on node 9 with the disk full")
        assert gateway.alive(), "a full disk must never stop the gateway"
        assert not of(sub.messages, "fire-1", "alarm"), "nothing stored, nothing published yet"
        filler.unlink()  # the technician frees the card: what waited in memory goes out
        sub.wait_for(lambda ms: any(a["state"] == "raised" for a in of(ms, "fire-1", "alarm")),
                     30, "the fire alarm once the disk takes writes again")
        assert gateway.stop() < 5
    assert "held message(s) stored" in gateway.log()


def test_a_disk_full_at_boot_still_switches_the_siren(
        gateway: Gateway, broker: Broker, sims: list[SimBus], tiny_disk: Path) -> None:
    sim, feed = start_sim(sims, [(1, "fire"), (9, "flood")])
    gateway.storage = tiny_disk / "state"
    gateway.body = rtu_bus("riser", sim.master_path, [
        device(1, "fire", "fire-1"), device(9, "flood", "siren-9")]) + SIREN_RULE
    filler = fill(tiny_disk)  # the card filled up while the gateway was down
    with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
        gateway.start()
        wait_for(lambda: "refuses writes" in gateway.log(), 20,
                 what="the gateway to report the full disk")
        ignite(feed, sim)
        wait_for(lambda: siren_on(sim), 60, what="the siren on node 9 with the disk full")
        assert gateway.alive(), "a disk full at boot must never stop the gateway"
        filler.unlink()
        sub.wait_for(lambda ms: any(a["state"] == "raised" for a in of(ms, "fire-1", "alarm")),
                     30, "the fire alarm once the outbox could be opened")
        assert gateway.stop() < 5


def test_a_corrupt_outbox_is_moved_aside_and_the_gateway_starts(
        gateway: Gateway, broker: Broker, sims: list[SimBus]) -> None:
    sim, _ = start_sim(sims, [(1, "fire")])
    gateway.storage.mkdir(parents=True)
    damaged = b"SQLite format 3\0" + os.urandom(8192)  # a power cut mid-write on an SD card
    (gateway.storage / "outbox.db").write_bytes(damaged)
    gateway.body = rtu_bus("riser", sim.master_path, [device(1, "fire", "fire-1")])
    with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
        gateway.start()
        sub.wait_for(lambda ms: any(body(m).get("event") == "outbox_quarantined"
                                    for m in ms if m.topic == f"edgefleet/v1/{GW}/event"),
                     20, "the quarantine event")
        sub.wait_for(lambda ms: of(ms, "fire-1", "telemetry"), 20, "telemetry from a new outbox")
        assert gateway.alive()
        assert gateway.stop() < 5
    kept = list(gateway.storage.glob("outbox.db.corrupt-*"))
    assert [p.read_bytes() for p in kept if not p.name.endswith(("-wal", "-shm"))] == [damaged]


# --------------------------------------------------------------------------- side failures

def test_a_dead_usb_adapter_on_bus_2_leaves_bus_1s_siren_working(
        gateway: Gateway, broker: Broker, sims: list[SimBus]) -> None:
    bus1, feed = start_sim(sims, [(1, "fire"), (9, "flood")])
    # what /dev/serial/by-id/... is: a link udev makes when the adapter is plugged in
    links = Path(tempfile.mkdtemp(prefix="ef-by-id-"))
    adapter = links / "ttyUSB1"
    gateway.body = (rtu_bus("riser-1", bus1.master_path, [
        device(1, "fire", "fire-1"), device(9, "flood", "siren-9")]) + "\n"
        + rtu_bus("riser-2", str(adapter), [device(2, "flood", "flood-2")]) + SIREN_RULE)
    with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
        gateway.start()  # bus 2's adapter is not plugged in
        sub.wait_for(lambda ms: True in states(ms, "fire-1"), 20, "bus 1 polling")
        sub.wait_for(lambda ms: False in states(ms, "flood-2"), 20, "flood-2 reported offline")
        ignite(feed, bus1)
        wait_for(lambda: siren_on(bus1), 60, what="the siren on bus 1")
        # the adapter is plugged in: bus 2 polls within 10 s
        bus2, _ = start_sim(sims, [(2, "flood")])
        adapter.symlink_to(bus2.master_path)
        plugged = time.monotonic()
        sub.wait_for(lambda ms: states(ms, "flood-2")[-1] is True, 15, "flood-2 online")
        assert time.monotonic() - plugged < 10
        # ... and pulled out again while in use: only bus 2 goes down
        bus2.stop()
        sims.remove(bus2)
        adapter.unlink()
        sub.wait_for(lambda ms: states(ms, "flood-2")[-1] is False, 15, "flood-2 offline again")
        seen = len(of(sub.messages, "fire-1", "telemetry"))
        sub.wait_for(lambda ms: len(of(ms, "fire-1", "telemetry")) > seen, 20,
                     "bus 1 still polling")
        assert gateway.alive()
        assert gateway.stop() < 5
    assert "riser-2" in gateway.log() and "offline" in gateway.log()
    shutil.rmtree(links)


def test_a_metrics_port_already_in_use_is_logged_not_fatal(
        gateway: Gateway, broker: Broker, sims: list[SimBus]) -> None:
    sim, _ = start_sim(sims, [(1, "fire")])
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    try:
        gateway.gateway_extra = f"metrics_port = {squatter.getsockname()[1]}"
        gateway.body = rtu_bus("riser", sim.master_path, [device(1, "fire", "fire-1")])
        with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
            gateway.start()
            sub.wait_for(lambda ms: len(of(ms, "fire-1", "telemetry")) >= 2, 30, "telemetry")
            assert gateway.alive()
            assert "cannot serve metrics" in gateway.log()
            assert gateway.stop() < 5
    finally:
        squatter.close()


def test_sigterm_stops_the_gateway_within_5_s_even_in_a_long_back_off(
        gateway: Gateway, broker: Broker, sims: list[SimBus]) -> None:
    sim, _ = start_sim(sims, [(1, "fire")])
    master, slave = os.openpty()
    try:
        # a node that never answers, polled every 20 s and backing off up to 10 min, and a
        # panel port that prints nothing: every task of the gateway is in a long wait
        gateway.body = rtu_bus("riser", sim.master_path, [
            device(7, "flood", "flood-7", "status_ms = 20000, max_backoff_s = 600")]) + f"""
[[serial_input]]
name = "facp"
port = "{os.ttyname(slave)}"
profile = "notifier"
device_id = "facp-1"
"""
        with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
            gateway.start()
            sub.wait_for(lambda ms: False in states(ms, "flood-7"), 60, "flood-7 offline")
            sub.wait_for(lambda ms: any(m.topic == f"edgefleet/v1/{GW}/status" and
                                        body(m).get("online") for m in ms), 20, "status")
            took = gateway.stop(timeout=30)
        assert took < 5, f"SIGTERM took {took:.1f} s"
        assert gateway.proc is not None and gateway.proc.returncode == 0
    finally:
        os.close(master)
        os.close(slave)


def test_sigterm_stops_the_gateway_within_seconds_when_the_broker_hangs(
        gateway: Gateway, broker: Broker, sims: list[SimBus]) -> None:
    """A broker that is up but does not answer (SIGSTOP: a hung VM, a full disk on the broker)
    must not hold the gateway's exit: no PUBACK for the drain, none for the offline status,
    no end to the DISCONNECT. Before, each of those waited its own 10 s (over 20 s in all)."""
    sim, _ = start_sim(sims, [(1, "fire")])
    gateway.body = rtu_bus("riser", sim.master_path, [
        device(1, "fire", "fire-1", "telemetry_ms = 200")])
    with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
        gateway.start()
        sub.wait_for(lambda ms: len(of(ms, "fire-1", "telemetry")) >= 2, 30, "telemetry")
    pid = broker.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        # telemetry keeps coming and stays in the outbox, unacknowledged (some in flight)
        wait_for(lambda: _outbox_rows(gateway.storage / "outbox.db") >= 5, 30,
                 what="unacknowledged messages in the outbox")
        took = gateway.stop(timeout=30)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert took < 8, f"SIGTERM took {took:.1f} s with a hung broker"
    assert gateway.proc is not None and gateway.proc.returncode == 0


def _outbox_rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


# --------------------------------------------------------------------------- settings that act

def test_a_device_with_a_short_timeout_is_declared_offline_sooner(
        gateway: Gateway, broker: Broker, sims: list[SimBus]) -> None:
    a, _ = start_sim(sims, [(1, "fire")])
    b, _ = start_sim(sims, [(1, "fire")])
    # two silent addresses, each alone on its bus with a 2 s bus timeout; one has its own
    # 0.05 s timeout (a fast local node), so three misses take it offline in about a second
    gateway.body = (rtu_bus("a", a.master_path, [device(5, "flood", "slow-5")], timeout_s=2.0)
                    + "\n" + rtu_bus("b", b.master_path, [
                        device(5, "flood", "quick-5", "timeout_s = 0.05")], timeout_s=2.0))
    with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
        gateway.start()
        sub.wait_for(lambda ms: False in states(ms, "slow-5") and False in states(ms, "quick-5"),
                     40, "both reported offline")
        assert gateway.stop() < 5
    first = [m.topic.split("/")[3] for m in sub.messages if m.topic.endswith("/state")]
    assert first[0] == "quick-5", first
    # the gateway's own clock: 3 misses × 2 s on the slow bus, 3 × 0.5 s periods on the quick
    slow = next(s for s in of(sub.messages, "slow-5", "state") if not s["online"])
    quick = next(s for s in of(sub.messages, "quick-5", "state") if not s["online"])
    from datetime import datetime
    gap = (datetime.fromisoformat(slow["ts"]) - datetime.fromisoformat(quick["ts"]))
    assert gap.total_seconds() > 2.0, gap


def test_a_full_disk_holds_alarms_in_memory_and_gives_up_telemetry_first(
        tiny_disk: Path) -> None:
    from gateway.outbox import Message, Outbox
    from gateway.store import Store

    def msg(kind: str, n: int) -> Message:
        return Message(f"edgefleet/v1/{GW}/d1/{kind}", {"v": 1, "n": n, "pad": "x" * 200},
                       kind, device="d1")

    outbox = Outbox(tiny_disk / "outbox.db", max_bytes=10 * 1024 * 1024)
    ticks = itertools.count(0, 5)  # a clock that moves past every retry delay
    store = Store(outbox, hold_max=50, clock=lambda: float(next(ticks)))
    try:
        assert store.put([msg("telemetry", 0)])
        filler = fill(tiny_disk)
        for i in range(1, 400):
            store.put([msg("alarm" if i % 10 == 0 else "telemetry", i)])
        assert store.held, "the disk refused, and nothing was raised to the producer"
        assert len(store.held) == 50 and store.lost_by_disk > 0
        assert sum(m.kind == "alarm" for m in store.held) == 39, \
            "telemetry is given up before alarms"
        filler.unlink()
        assert store.flush() and not store.held
        kept = [json.loads(s.payload)["n"] for s in outbox.peek(1000)]
        assert kept == sorted(kept), "held messages are stored in the order they came"
        assert {n for n in kept if n and n % 10 == 0} == set(range(10, 400, 10))
        assert store.stored + store.lost_by_disk == 400
    finally:
        outbox.close()


def test_a_fire_panel_cable_pulled_and_plugged_back_still_clears_the_alarm(
        gateway: Gateway, broker: Broker) -> None:
    import tty

    links = Path(tempfile.mkdtemp(prefix="ef-panel-"))
    port = links / "ttyUSB-panel"
    fds: list[int] = []

    def plug() -> int:
        master, slave = os.openpty()
        tty.setraw(master)
        fds.extend((master, slave))
        with contextlib.suppress(FileNotFoundError):
            port.unlink()
        port.symlink_to(os.ttyname(slave))
        return master

    try:
        first = plug()
        gateway.body = f"""
[[serial_input]]
name = "facp"
port = "{port}"
profile = "notifier"
device_id = "facp-1"
"""
        with Subscriber(broker, f"edgefleet/v1/{GW}/facp-1/alarm") as sub:
            gateway.start()
            wait_for(lambda: gateway.log().count("reading panel events") == 1, 20,
                     what="the gateway to open the panel port")
            os.write(first, b"FIRE ALARM  SMOKE(PHOTO)  3RD FLOOR CORRIDOR            Z003  "
                            b"02:03P 111226 1D012\r\n")
            sub.wait_for(lambda ms: len(ms) == 1, 20, "the fire raised")
            for fd in fds:  # the cable is pulled: both ends of this pty go away
                os.close(fd)
            fds.clear()
            port.unlink()
            second = plug()
            wait_for(lambda: gateway.log().count("reading panel events") == 2, 20,
                     what="the gateway to re-open the panel port")
            os.write(second, b"CLR ALM     SMOKE(PHOTO)  3RD FLOOR CORRIDOR            Z003  "
                             b"02:07P 111226 1D012\r\n")
            got = sub.wait_for(lambda ms: len(ms) == 2, 20, "the fire cleared")
            raised, cleared = (body(m) for m in got)
            assert (raised["state"], cleared["state"]) == ("raised", "cleared")
            assert raised["alarm_id"] == cleared["alarm_id"]
            assert gateway.stop() < 5
    finally:
        for fd in fds:
            os.close(fd)
        shutil.rmtree(links)


def test_a_command_answered_while_the_disk_is_full_keeps_its_ack(
        broker: Broker, tiny_disk: Path) -> None:
    """The ack goes through the gateway's Store like every other write: held in memory while
    the SD card is full (the session keeps running), delivered once the card takes writes."""
    import asyncio

    from gateway.mqtt import Backoff, Command, MqttSession
    from gateway.outbox import Outbox
    from gateway.store import Store
    from tests.gateway.mosquitto import publish_once

    ticks = itertools.count(0, 5)  # a clock that moves past every retry delay
    outbox = Outbox(tiny_disk / "outbox.db", max_bytes=10 * 1024 * 1024)
    store = Store(outbox, clock=lambda: float(next(ticks)))
    handled: list[str] = []

    async def handler(cmd: Command) -> None:
        session.ack(cmd.id, True)
        handled.append(cmd.id)

    session = MqttSession(broker.host, broker.port, gateway_id=GW, on_command=handler,
                          backoff=Backoff(0.1, 1.0), status_interval=None, store=store.put)

    async def scenario(acks: Subscriber, status: Subscriber) -> None:
        stop = asyncio.Event()
        pump = asyncio.create_task(session.pump(outbox, stop))
        try:
            await asyncio.to_thread(status.wait_count, 1)  # online: listening for commands
            filler = fill(tiny_disk)
            await asyncio.to_thread(publish_once, broker, f"edgefleet/v1/{GW}/cmd/siren-9/reset",
                                    b'{"id": "cmd-on-a-full-disk"}')
            deadline = time.monotonic() + 15
            while not handled and time.monotonic() < deadline and not pump.done():
                await asyncio.sleep(0.02)
            assert handled == ["cmd-on-a-full-disk"]
            assert not pump.done(), "a full disk while acking must not stop the MQTT session"
            assert [m.topic for m in store.held] == [f"edgefleet/v1/{GW}/ack"], \
                "the ack is held in memory, not lost"
            assert not acks.messages
            filler.unlink()  # the technician frees the card
            assert store.flush() and not store.held
            session.notify()
            [ack] = await asyncio.to_thread(acks.wait_count, 1)
            body = json.loads(ack.payload)
            assert body["id"] == "cmd-on-a-full-disk" and body["ok"] is True
        finally:
            stop.set()
            await asyncio.wait_for(pump, 15)

    try:
        with Subscriber(broker, f"edgefleet/v1/{GW}/ack") as acks, \
                Subscriber(broker, f"edgefleet/v1/{GW}/status") as status:
            asyncio.run(scenario(acks, status))
    finally:
        outbox.close()
