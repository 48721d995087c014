"""The poller's supervision of its own bus, with a bus that fails in ways a real port cannot be
made to fail on demand (an unforeseen exception)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.bus import ModbusBus
from gateway.decode import DeviceDecoder, DeviceInfo
from gateway.outbox import Message
from gateway.poller import BusPoller, DevicePoll
from gateway.schedule import Timing
from hardware.regmap import load_maps


class _Client:
    connected = True

    def close(self) -> None:
        pass


class SurprisingBus(ModbusBus):
    """Answers like a healthy fire detector, except that its first read raises a bug."""

    def __init__(self) -> None:
        super().__init__(timeout=0.1)
        self._client = _Client()
        self.reads = 0

    def describe(self) -> str:
        return "a bus with a surprise"

    async def connect(self) -> None:
        pass

    async def read_input(self, device: int, address: int, count: int,
                         timeout: float | None = None) -> list[int]:
        self.reads += 1
        if self.reads == 1:
            raise RuntimeError("an error nobody foresaw")
        words = [0] * count
        fire = load_maps().classes["fire"]
        if address == 0:
            words[:5] = [1, fire.class_id, 0, 1, 0]
        return words


def test_an_unforeseen_error_on_one_bus_reopens_that_bus_and_polling_resumes() -> None:
    async def main() -> tuple[BusPoller, list[Message]]:
        got: list[Message] = []
        decoder = DeviceDecoder("gw", DeviceInfo("fire-1", "fire", "", "riser", 1))
        poller = BusPoller("riser", SurprisingBus(),
                           [DevicePoll(decoder, Timing(0.05, 1.0, 1.0, fire=True))],
                           got.extend, reconnect_s=0.05)
        stop = asyncio.Event()
        run = asyncio.create_task(poller.run(stop))

        def online(ms: list[Any]) -> bool:
            return any(m.kind == "state" and m.body["online"] for m in ms)

        for _ in range(200):
            if online(got):
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(run, 2)
        return poller, got

    poller, got = asyncio.run(main())
    states = [m.body["online"] for m in got if m.kind == "state"]
    assert states == [False, True], "offline with the reason, then polled again"
    assert poller.link_losses == 1
    assert "an error nobody foresaw" in next(m.body["reason"] for m in got if m.kind == "state")


class LateAnswerBus(SurprisingBus):
    """A healthy fire detector whose answers to reads number `bad_at` come with the wrong
    register count: the late answer to an earlier request (what a stalled host or a short
    first try leaves on the line), or, when every read is bad, a firmware bug."""

    def __init__(self, bad_at: set[int] | None = None) -> None:
        super().__init__()
        self.bad_at = bad_at

    async def read_input(self, device: int, address: int, count: int,
                         timeout: float | None = None) -> list[int]:
        self.reads += 1
        if self.bad_at is None or self.reads in self.bad_at:
            from gateway.bus import BadReply

            raise BadReply(device, 4, f"1 registers for {count} asked")
        words = [0] * count
        if address == 0:
            words[:5] = [1, load_maps().classes["fire"].class_id, 0, 1, 0]
        return words


def _poll_for(bus: ModbusBus, seconds: float) -> tuple[DevicePoll, list[Message]]:
    async def main() -> tuple[DevicePoll, list[Message]]:
        got: list[Message] = []
        dev = DevicePoll(DeviceDecoder("gw", DeviceInfo("fire-1", "fire", "", "riser", 1)),
                         Timing(0.02, 1.0, 1.0, fire=True))
        poller = BusPoller("riser", bus, [dev], got.extend, reconnect_s=0.05)
        stop = asyncio.Event()
        run = asyncio.create_task(poller.run(stop))
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait_for(run, 2)
        return dev, got

    return asyncio.run(main())


def test_a_late_answer_to_an_earlier_request_is_read_again_not_a_protocol_fault() -> None:
    dev, got = _poll_for(LateAnswerBus(bad_at={1, 5, 9}), 0.3)
    assert dev.bad_replies == 0 and dev.failures == 0 and dev.polls > 3
    assert [m.body["online"] for m in got if m.kind == "state"] == [True]


def test_a_node_that_always_answers_wrong_is_still_a_protocol_fault() -> None:
    dev, got = _poll_for(LateAnswerBus(), 0.3)
    assert dev.bad_replies > 0 and dev.failures > 0
    assert any(not m.body["online"] and "protocol fault" in m.body["reason"]
               for m in got if m.kind == "state")


class SaturatedBus(SurprisingBus):
    """A healthy fire detector whose every read takes a transaction's time (no surprise)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 1  # past the surprise
        self.writes = 0

    async def read_input(self, device: int, address: int, count: int,
                         timeout: float | None = None) -> list[int]:
        await asyncio.sleep(0.002)
        return await super().read_input(device, address, count, timeout)

    async def write_register(self, device: int, address: int, value: int,
                             timeout: float | None = None) -> None:
        await asyncio.sleep(0.002)
        self.writes += 1


def test_background_work_gets_its_share_of_a_saturated_bus() -> None:
    """Polls always due (interval 0): a transfer's transactions still run, one per
    BACKGROUND_EVERY polls, instead of waiting forever for an idle moment."""
    from gateway.poller import BACKGROUND_EVERY

    async def main() -> tuple[int, int]:
        bus = SaturatedBus()
        dev = DevicePoll(DeviceDecoder("gw", DeviceInfo("fire-1", "fire", "", "riser", 1)),
                         Timing(0.0, 0.0, 1.0, fire=True))
        poller = BusPoller("riser", bus, [dev], lambda _: None, reconnect_s=0.05)
        stop = asyncio.Event()
        run = asyncio.create_task(poller.run(stop))
        await asyncio.sleep(0.1)  # polling under way
        for _ in range(5):
            await asyncio.wait_for(
                poller.background(lambda b: b.write_register(1, 0, 0)), 5)
        reads = bus.reads
        stop.set()
        await asyncio.wait_for(run, 2)
        return bus.writes, reads

    writes, reads = asyncio.run(main())
    assert writes == 5
    assert reads >= 5 * BACKGROUND_EVERY  # polling went on meanwhile: the bus was saturated


class RecordingBus(SurprisingBus):
    """A healthy fire detector that records every read: (first register, count, timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.timeout = 1.0
        self.reads = 1  # past the surprise
        self.log: list[tuple[int, int, float | None]] = []

    async def read_input(self, device: int, address: int, count: int,
                         timeout: float | None = None) -> list[int]:
        self.log.append((address, count, timeout))
        await asyncio.sleep(0.001)
        if address == 0:
            return await super().read_input(device, address, count, timeout)
        words = [0] * count
        if address == 16:
            words[0] = 123  # smoke 1.23 %/m
        return words


def test_telemetry_of_a_detector_online_reads_its_class_block_alone() -> None:
    bus = RecordingBus()
    dev, got = _poll_for(bus, 0.8)  # status every 20 ms; the first telemetry after 0.5 s
    fire = load_maps().classes["fire"]
    assert (16, fire.input_count - 16) in [r[:2] for r in bus.log], bus.log
    assert (0, fire.input_count) not in [r[:2] for r in bus.log]  # never the whole map
    tele = [m.body["values"] for m in got if m.kind == "telemetry"]
    assert tele and tele[0]["smoke"] == pytest.approx(1.23)
    assert dev.decoder.values["smoke"] == pytest.approx(1.23)  # the edge rules see it too
    assert [m.body["online"] for m in got if m.kind == "state"] == [True]


def test_every_first_try_waits_a_few_replies_long_not_the_whole_timeout() -> None:
    # replies take ~1 ms (a loaded host: some tens), so once learned a first try waits a few
    # tens of ms, whatever it reads, never the bus' 1 s (every read here is a first try)
    from gateway.schedule import LEARN_AFTER

    bus = RecordingBus()
    _poll_for(bus, 0.8)  # status words, alarm words, and a telemetry read after 0.5 s
    later = bus.log[LEARN_AFTER + 2:]
    assert {count for _, count, _ in later} >= {1, 5, 6}, bus.log
    assert all(t is not None and t < bus.timeout / 2 for _, _, t in later), bus.log
