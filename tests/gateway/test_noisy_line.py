"""A life-safety bus with noise on it: CRC errors cost a retry, never a detector.

Six real firmware fire detectors on a simulated RS-485 line where 1 % of the bytes get a flipped
bit (the hub's noise fault: a badly terminated cable, a VFD next to the riser). Each garbled reply
is evidence that its node is alive; the gateway must retry it, count it, and keep polling every
detector at its usual rate, so a fire on that line reaches the fleet as promptly as on a clean one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Any

from hardware.sim.simbus import SimBus
from hardware.sim.simrun import attach_physics
from tests.conftest import wait_for
from tests.gateway.gwconfig import Node, gateway_toml
from tests.gateway.mosquitto import Broker, Received, Subscriber

GW = "gw-noisy"
DETECTORS = range(1, 7)
# The hub flips bits per receiving port (all seven hear every frame), so ~90 bytes are exposed
# per status poll: 1200 corrupted bytes are ~1300 polls. With 14 % of polls failing at 1 %
# noise, the old rule (three failed polls in a row: offline, back off up to 30 s) takes ~3
# detectors offline in that many; now a detector needs six silent requests in a row.
CORRUPTED = 1200


def _config(port: str, broker: Broker, storage: Path) -> str:
    return gateway_toml(GW, broker, storage, port,
                        [Node(a, "fire", f"det-{a}", located=False, poll="status_ms = 100")
                         for a in DETECTORS])


def _of(messages: list[Received], device: str, channel: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages
            if m.topic == f"edgefleet/v1/{GW}/{device}/{channel}"]


def test_a_fire_on_a_noisy_line_reaches_the_fleet_promptly_and_no_detector_drops_offline(
        tmp_path: Path, broker: Broker) -> None:
    sim = SimBus([(a, "fire") for a in DETECTORS])
    feed = attach_physics(sim)
    sim.start()
    config = tmp_path / "gateway.toml"
    config.write_text(_config(sim.master_path, broker, tmp_path / "state"))
    log_path = tmp_path / "gateway.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with Subscriber(broker, f"edgefleet/v1/{GW}/#") as sub:
            with open(log_path, "ab") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "edgefleet.cli", "-v", "gateway", "run", str(config)],
                    stdout=subprocess.DEVNULL, stderr=log_file)
            sub.wait_for(lambda ms: all(_of(ms, f"det-{a}", "state") for a in DETECTORS), 30,
                         "every detector's first state")
            sim.hub.faults.bit_noise = 0.01
            corrupted = sim.hub.stats.corrupted_bytes
            wait_for(lambda: sim.hub.stats.corrupted_bytes >= corrupted + CORRUPTED, 180,
                     what=f"the noisy line to corrupt {CORRUPTED} bytes")
            offline = [(a, s.get("reason")) for a in DETECTORS
                       for s in _of(sub.messages, f"det-{a}", "state") if not s["online"]]
            assert offline == [], "CRC errors are not silence: no detector may be offline"

            feed.apply(3, "ignite", {"growth": 1.0})
            crossed = wait_for(lambda: feed.truth(3)["smoke"] > 4.0 and time.monotonic(), 60,
                               what="the smoke in room 3 to pass 4 %/m")
            assert isinstance(crossed, float)
            sub.wait_for(lambda ms: any(a["state"] == "raised"
                                        for a in _of(ms, "det-3", "alarm")),
                         30, "the fire alarm from det-3")
            late = time.monotonic() - float(crossed)
            # the detector's 5-sample median at 500 ms, a 100 ms poll, one retry: a few
            # seconds at most even on a loaded machine; a 30 s back-off would show here
            assert late < 10.0, f"alarm {late:.1f} s after the smoke crossed the threshold"
    finally:
        sim.hub.faults.bit_noise = 0.0
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        sim.stop()


def test_a_garbled_reply_is_told_from_silence_without_waiting_for_the_timeout() -> None:
    """The bus itself: bytes that make no frame are Garbled (the node is alive), known once the
    line has gone quiet after them, well before the 1 s reply timeout; silence stays
    NoResponse."""
    import asyncio

    from gateway.bus import Garbled, NoResponse
    from gateway.rtu import RtuBus

    sim = SimBus([(1, "fire")])
    sim.start()
    try:
        sim.hub.faults.bit_noise = 0.05  # a cable that garbles most replies (37 bytes)

        async def reads() -> list[tuple[str, float]]:
            outcomes: list[tuple[str, float]] = []
            async with RtuBus(sim.master_path, timeout=1.0) as bus:
                for _ in range(40):
                    t = time.monotonic()
                    try:
                        await bus.read_input(1, 0, 16)
                        outcomes.append(("ok", time.monotonic() - t))
                    except Garbled as exc:
                        assert exc.heard > 0
                        outcomes.append(("garbled", time.monotonic() - t))
                    except NoResponse:
                        outcomes.append(("silence", time.monotonic() - t))
                    if sum(kind == "garbled" for kind, _ in outcomes) >= 3:
                        break
                assert bus.garbled == sum(kind == "garbled" for kind, _ in outcomes)
            return outcomes

        outcomes = asyncio.run(reads())
    finally:
        sim.stop()
    garbled = [took for kind, took in outcomes if kind == "garbled"]
    assert len(garbled) >= 3, outcomes
    assert min(garbled) < 1.0, f"a garbled reply waited for the whole timeout: {outcomes}"


def test_a_reply_garbled_by_noise_is_known_at_its_last_byte() -> None:
    """A reply of the length the request asks for whose CRC is wrong cannot become valid: the
    bus says Garbled at once, without waiting for the line to go quiet (here a 5 s quiet gap
    and a 10 s timeout, so only the length rule can answer within a second)."""
    from pymodbus.framer import FramerRTU

    from gateway.bus import Garbled
    from gateway.rtu import RtuBus

    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    path = os.ttyname(slave)
    stop = threading.Event()
    good = bytes.fromhex("0104020021")  # address 1, FC04, 2 bytes: status 0x0021 (CRC below)

    def node() -> None:  # answers each request: first with one bit flipped, then intact
        frame = good + FramerRTU.compute_CRC(good).to_bytes(2, "big")
        answers = [bytes([frame[0], frame[1], frame[2], frame[3] ^ 0x10]) + frame[4:], frame]
        while not stop.is_set() and answers:
            if select.select([master], [], [], 0.1)[0]:
                os.read(master, 64)
                time.sleep(0.005)
                os.write(master, answers.pop(0))

    thread = threading.Thread(target=node, daemon=True)
    thread.start()

    async def reads() -> tuple[float, list[int]]:
        async with RtuBus(path, timeout=10.0) as bus:
            bus.garble_gap_s = 5.0
            t = time.monotonic()
            with contextlib.suppress(Garbled):
                await bus.read_input(1, 5, 1)
                raise AssertionError("a reply with a wrong CRC was taken")
            took = time.monotonic() - t
            return took, await bus.read_input(1, 5, 1)

    try:
        took, words = asyncio.run(reads())
    finally:
        stop.set()
        thread.join(2)
        os.close(master)
        os.close(slave)
    assert took < 1.0, f"the garbled reply was known only after {took:.1f} s"
    assert words == [0x0021]
