"""A fire detector in pre-alarm is watched closely: real firmware on a paced bus, the real poller.

Smoke past the pre-alarm threshold is the moment before a fire alarm; the schedule reads such a
detector's status every HOT_STATUS_S instead of its usual period, ahead of the others, so the
alarm is read within a fraction of a second of the detector latching it (gateway/schedule.py).
"""

from __future__ import annotations

import asyncio
import time

from gateway.bus import ModbusBus
from gateway.decode import DeviceDecoder, DeviceInfo
from gateway.outbox import Message
from gateway.poller import BusPoller, DevicePoll
from gateway.rtu import RtuBus
from gateway.schedule import HOT_STATUS_S, Timing
from hardware.regmap import load_maps
from hardware.sim.simbus import SimBus
from hardware.sim.simrun import attach_physics

DETECTORS = (1, 2, 3)
STATUS_S = 0.5  # the fire default


def _raw(name: str, value: float) -> tuple[int, int]:
    reg = load_maps().classes["fire"].holding_register(name)
    return reg.address, reg.encode(value)[0]


def test_a_detector_in_pre_alarm_is_read_several_times_a_second_then_its_alarm_at_once() -> None:
    sim = SimBus([(a, "fire") for a in DETECTORS])
    feed = attach_physics(sim)
    sim.feed_period = 0.1
    sim.start()

    async def main() -> tuple[dict[str, int], list[Message], float]:
        got: list[Message] = []
        polls = [DevicePoll(DeviceDecoder("gw", DeviceInfo(f"det-{a}", "fire", "", "riser", a)),
                            Timing(STATUS_S, 30.0, 30.0, fire=True)) for a in DETECTORS]
        poller = BusPoller("riser", RtuBus(sim.master_path, timeout=0.3), polls, got.extend)
        stop = asyncio.Event()
        run = asyncio.create_task(poller.run(stop))
        try:
            while not all(d.decoder.online for d in polls):
                await asyncio.sleep(0.05)
            # room 1's detector: pre-alarm at 1 %/m, alarm at 8 %/m, so a growing fire keeps
            # it in pre-alarm for a few seconds
            for name, value in (("smoke_prealarm", 1.0), ("smoke_alarm", 8.0)):
                address, raw = _raw(name, value)

                async def write(bus: ModbusBus, address: int = address, raw: int = raw) -> None:
                    await bus.write_register(1, address, raw)

                await poller.submit(write)
            feed.apply(1, "ignite", {"growth": 1.0, "smokiness": 20.0})
            hot, cold = polls[0], polls[1]
            deadline = time.monotonic() + 30
            while not hot.timing.hot and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert hot.timing.hot, "the detector's pre-alarm was never read"
            before = {"hot": hot.polls, "cold": cold.polls}
            # Count over 1.5 s, or until the detector latches its alarm and stops being hot
            # (a growing fire may get there first): reads of a detector that is no longer hot
            # say nothing about the hot rule.
            window_end = time.monotonic() + 1.5
            while hot.timing.hot and time.monotonic() < window_end:
                await asyncio.sleep(0.01)
            counted = {"hot": hot.polls - before["hot"], "cold": cold.polls - before["cold"]}
            while not any(m.kind == "alarm" and m.body["type"] == "smoke" for m in got):
                assert time.monotonic() < deadline, "no smoke alarm from room 1"
                await asyncio.sleep(0.01)
            hot_at_alarm = hot.timing.hot
            return counted, got, float(hot_at_alarm)
        finally:
            stop.set()
            await asyncio.wait_for(run, 10)

    try:
        counted, got, hot_at_alarm = asyncio.run(main())
    finally:
        sim.stop()
    # 1.5 s: ~3 reads at the usual 500 ms, ~10 at HOT_STATUS_S (a loaded machine gets fewer)
    assert counted["cold"] <= 1.5 / STATUS_S + 1, counted
    # without the hot rule both are read at the same period (hot == cold, about 3 each)
    assert counted["hot"] >= 2 * counted["cold"] + 1, counted
    assert counted["hot"] - 1 <= 1.5 / HOT_STATUS_S, counted
    assert not hot_at_alarm, "in alarm the detector is no longer hot: its usual period again"
    raised = [m.body["type"] for m in got if m.kind == "alarm" and m.body["state"] == "raised"]
    assert raised[:2] == ["prealarm", "smoke"], raised
