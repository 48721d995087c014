"""The node loop against a real board's watchdog and a bus that misbehaves: a long sample
period on a quiet bus, a stuck transmitter during a fire, a sample slower than t3.5 while a
master polls, a sensor read that hangs. The unix port's software watchdog (firmware/main.py)
ends a node that is not fed in time and the simulator restarts it, as the board's reset would;
a reset shows as a new boot count."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from pymodbus.exceptions import ModbusException

from hardware.serialline import char_time
from hardware.sim import simbus
from hardware.sim.simbus import SimBus
from tests.bus.conftest import MAPS, STATUS, Bus, Master, ModbusFailure, bits
from tests.conftest import wait_for

FIRE = MAPS.classes["fire"]


def test_a_60_s_sample_period_on_an_idle_bus_does_not_trip_the_watchdog(start_bus) -> None:  # type: ignore[no-untyped-def]
    # The ESP32 watchdog is 8 s and the sample period may be 60 s: the loop must wake and feed
    # between samples. (The loop that blocked for the whole period was reset after 8 s.) The
    # loop wakes at half the watchdog's timeout, whatever it is: so the watchdog here is 2 s and
    # the bus stays idle for four of its timeouts (30 s were 3.75 timeouts of the 8 s one).
    watchdog_s = 2.0
    bus: Bus = start_bus([(1, "fire")], watchdog_ms=int(watchdog_s * 1000))
    bus.master.write(1, 1, 60000)
    boots = bus.master.values(1)["boot_count"]
    time.sleep(4 * watchdog_s)  # the condition under test: nobody talks to the node meanwhile
    values = bus.master.values(1)
    node = bus.sim.node(1)
    assert node.events.watchdog_resets == 0, node.events.lines[-5:]
    assert node.events.restarts == 0
    assert values["boot_count"] == boots
    assert values["uptime"] >= 4 * watchdog_s


def test_a_sensor_read_that_hangs_is_ended_by_the_watchdog(start_bus) -> None:  # type: ignore[no-untyped-def]
    # The watchdog is real: a converter that never finishes (3 s per reading, watchdog 1 s)
    # keeps the duties from completing, nothing feeds, and the board resets, again and again.
    bus: Bus = start_bus([(1, "fire")], wait_ready=False, watchdog_ms=1000,
                         node_options={1: {"adc_delay_ms": 3000}})
    node = bus.sim.node(1)
    wait_for(lambda: node.events.watchdog_resets >= 2, 20, what="two watchdog resets")
    assert any("watchdog" in line for line in node.events.lines), node.events.lines[-5:]


def processes_running_in(flash: Path) -> list[int]:
    """The processes whose working directory is in ``flash`` (a node runs in its own)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = Path(os.readlink(f"/proc/{entry}/cwd"))
            except OSError:
                continue  # gone meanwhile, or not ours to see
            if cwd == flash or flash in cwd.parents:
                found.append(int(entry))
    return found


def test_a_bus_stopped_while_a_reset_node_comes_back_leaves_no_node_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # CI run 3: a node the watchdog had reset was restarted by its supervisor just as the test
    # stopped the bus, and wrote into its flash while the directory was being removed. Here the
    # restart is held at the point where it launches the new process until the stop is over
    # (or 1 s, for a stop that waits for the supervisor): no node may run after stop().
    sim = SimBus([(1, "fire")], workdir=tmp_path)
    node = sim.node(1)
    launch_tool = simbus.micropython_executable
    restarting = threading.Event()
    stopped = threading.Event()
    supervisors: list[threading.Thread] = []

    def launch_held() -> str:
        if threading.current_thread().name.endswith("-stdout"):  # a restart, not the boot
            supervisors.append(threading.current_thread())
            restarting.set()
            stopped.wait(1.0)
        return launch_tool()

    monkeypatch.setattr(simbus, "micropython_executable", launch_held)
    sim.start()
    try:
        node.kill()  # a reset: the supervisor brings the board back at once
        assert restarting.wait(10), "the supervisor never restarted the node"
        sim.stop()
        stopped.set()
        for supervisor in supervisors:
            supervisor.join(10)
        assert processes_running_in(tmp_path) == [], "a node came back after stop()"
        node.start()  # nor can anything start it again
        assert processes_running_in(tmp_path) == [], "a stopped node started again"
    finally:
        stopped.set()
        for pid in processes_running_in(tmp_path):
            os.kill(pid, signal.SIGKILL)  # what the old supervisor left running
        sim.stop()


def test_a_babbling_bus_does_not_stop_fire_detection(start_bus) -> None:  # type: ignore[no-untyped-def]
    # At 1200 baud (t3.5 = 32 ms) the hub's stream of noise has no silence a receiver could cut
    # at, even on a loaded machine; at 19200 (t3.5 = 2 ms) thread scheduling would put gaps in
    # it that a real stuck transmitter never leaves.
    bus: Bus = start_bus([(1, "fire")], baud=1200, wait_ready=False)
    bus.master.close()
    bus.master = Master(bus.sim.master_path, 1200, timeout=2.0)
    before = wait_for(lambda: bus.master.try_values(1), 20, what="node 1")
    assert isinstance(before, dict)
    hub = bus.sim.hub
    # A stuck transmitter drives the pair for 10 s. Meanwhile a fire flares up in the room
    # and is put out, and the smoke fan clears the room below the alarm threshold before the
    # noise stops: only a detector that kept sampling through the noise can have seen it.
    hub.faults.babble = True
    started = time.monotonic()
    bus.feed.apply(1, "ignite", {"growth": 1.0, "smokiness": 20.0})
    wait_for(lambda: bus.feed.truth(1)["smoke"] >= 6.0, 10, what="smoke from the fire")
    bus.feed.apply(1, "extinguish", {"tau_s": 0.0})
    bus.feed.apply(1, "ventilate", {"ach": 600.0})
    wait_for(lambda: time.monotonic() - started >= 10.0 and bus.feed.truth(1)["smoke"] < 3.0,
             30, what="10 s of noise and a cleared room")
    noisy_s = time.monotonic() - started
    hub.faults.babble = False
    assert hub.stats.babble_bytes >= 0.8 * noisy_s / char_time(hub.baud)  # really continuous
    time.sleep(0.1)
    bus.master.client.socket.reset_input_buffer()
    values = wait_for(lambda: bus.master.try_values(1), 10, what="an answer after the noise")
    assert isinstance(values, dict)
    assert bus.feed.truth(1)["smoke"] < 3.5, "the room must be clear when the master reads"
    status = bits(values["status"], MAPS.status_bits)
    assert {"alarm", "latched"} <= status, (status, values)
    assert "smoke" in bits(values["alarm_bits"], FIRE.alarm_bits), values
    node = bus.sim.node(1)
    assert values["boot_count"] == before["boot_count"], node.events.lines[-5:]
    assert node.events.restarts == 0
    assert int(values["status"]) & (1 << STATUS["latched"])


def test_a_sample_slower_than_t35_does_not_merge_frames(start_bus) -> None:  # type: ignore[no-untyped-def]
    # Node 1's converter takes 25 ms per reading (a 50 ms sample, 25 times t3.5 at 19200),
    # sampling every 100 ms; node 2 is its twin without the slow converter. The master polls
    # both in turn, 10 ms apart. Node 1 hears the request to node 2, node 2's reply and its own
    # request while it samples: each must stay one frame. A merge shows as a CRC error in the
    # node's own counter (the loop that did not listen while sampling merged 29-80 here, and
    # lost a quarter of its polls at the first try). The test machine's scheduler can also
    # hold a node process long enough to merge two frames, on any node: so node 1 is compared
    # with its twin, with a margin of 3 for that noise.
    bus: Bus = start_bus([(1, "fire"), (2, "fire")], node_options={1: {"adc_delay_ms": 25}})
    bus.master.write(1, 1, 100)
    bus.master.close()
    bus.master = master = Master(bus.sim.master_path, retries=1)
    time.sleep(0.3)
    before = {a: master.values(a)["crc_errors"] for a in (1, 2)}
    count = FIRE.input_count
    failures = 0
    for _ in range(100):
        for address in (2, 1):
            try:
                master.inputs(address, 0, count)
            except (ModbusFailure, ModbusException):
                failures += 1
            time.sleep(0.01)
    merged = {a: master.values(a)["crc_errors"] - before[a] for a in (1, 2)}
    assert failures == 0, f"{failures} of 200 polls failed twice"
    assert merged[1] <= merged[2] + 3, f"frames merged while node 1 was sampling: {merged}"
    assert bus.sim.node(1).events.restarts == 0
