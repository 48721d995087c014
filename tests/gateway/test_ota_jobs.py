"""The gateway's OTA job rules, one manager at a time: which ``start`` starts what, when a
committed delivery has waited too long (on which clock), what a node without the OTA window
gets, and how the gateway takes over a rotated release key set.

The manager here is the real :class:`gateway.ota.OtaManager` with real signed bundles served
over HTTP (provisioning.release, tests/gateway/otafleet.py), its real cache and job file; the
bus side is a stand-in poller that hands each transaction to a small bus double (the transfer
itself, its polling lane and real nodes are tests/gateway/test_ota.py's). What the manager
publishes is read back as contract-checked OtaEvents.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import gateway.ota as ota_module
from contracts.mqtt import OtaEvent
from contracts.release import KeySet
from gateway.bus import ModbusError
from gateway.config.schema import OtaSection
from gateway.ota import OtaManager, boot_deadline
from gateway.outbox import Message
from provisioning import release as rel
from tests.gateway.otafleet import (
    TOKEN,
    BundleServer,
    Keys,
    app_source,
    bundle,
    make_keys,
    make_release,
    sha256,
)

DEVICE, ADDRESS = "fire-1", 1


# -- the stand-ins for the bus ----------------------------------------------------------------
class OldFirmwareBus:
    """A node whose firmware predates the OTA window: every write there is exception 02."""

    timeout = 0.3

    def __init__(self) -> None:
        self.offers = 0

    def describe(self) -> str:
        return "riser"

    async def write_registers(self, device: int, address: int, values: list[int],
                              timeout: float | None = None) -> None:
        self.offers += 1
        raise ModbusError(device, 0x10, 2)

    async def read_input(self, device: int, address: int, count: int,
                         timeout: float | None = None) -> list[int]:
        raise ModbusError(device, 0x04, 2)


class Poller:
    """What the manager uses of a gateway.poller.BusPoller: one bus, one fire node."""

    def __init__(self, bus: Any = None) -> None:
        self.name = "riser"
        self.link_up = True
        self.bus = bus or OldFirmwareBus()
        decoder = SimpleNamespace(info=SimpleNamespace(cls="fire", id=DEVICE), values={},
                                  online=True)
        self.devices = {DEVICE: SimpleNamespace(address=ADDRESS, decoder=decoder,
                                                timing=SimpleNamespace(offline=False))}

    async def background(self, job: Callable[[Any], Awaitable[Any]]) -> Any:
        return await job(self.bus)

    async def submit(self, job: Callable[[Any], Awaitable[Any]]) -> Any:
        return await job(self.bus)

    def repoll(self, device: str) -> None:
        pass


async def staged_at_once(bus: Any, address: int, stream: bytes, *,
                         progress: Callable[[int, int], None],
                         on_commit: Callable[[], None] | None = None) -> None:
    """A node that takes the whole image and verifies it (the transfer's own tests are
    test_ota_transfer.py and test_ota.py)."""
    progress(0, len(stream))
    if on_commit is not None:
        on_commit()
    progress(len(stream), len(stream))


# -- the rig -----------------------------------------------------------------------------------
class Rig:
    def __init__(self, tmp: Path, keys: Keys, server: BundleServer) -> None:
        self.tmp, self.keys, self.server = tmp, keys, server
        self.events: list[dict[str, Any]] = []
        self.storage = tmp / "state"

    def manager(self, *, poller: Poller | None = None, transfer: Any = staged_at_once,
                trial_after_s: float = 30, rng: Any = None, **section: Any) -> OtaManager:
        config = OtaSection.model_validate({"trust": self.keys.trust, "offer_jitter_s": 0,
                                            "download_retries": 0, **section})
        poller = poller or Poller()
        return OtaManager("gw-1", config, cache_dir=self.storage / "ota-cache",
                          state_path=self.storage / "ota-jobs.json", pollers={"riser": poller},
                          device_bus={DEVICE: poller}, publish=self._publish,
                          trial_after_s=trial_after_s, transfer=transfer, rng=rng)

    def _publish(self, messages: list[Message]) -> None:
        for m in messages:
            body = dict(m.body, epoch="e" * 16, seq=len(self.events) + 1)
            OtaEvent.model_validate(body)  # what the fleet will parse
            self.events.append(body)

    def release(self, name: str, version: tuple[int, int, int] = (1, 4, 0), *,
                key: Path | None = None, carries: KeySet | None = None) -> bytes:
        """A tiny signed release served as ``name`` (by ``key``, carrying ``carries``)."""
        source = app_source(self.tmp / "src" / name, version, tiny=True)
        out = make_release(self.tmp / "releases" / name, self.keys, version=version,
                           source=source)
        if key is not None or carries is not None:
            rel.sign(out, key or self.keys.private, carries)
        data = bundle(out)
        self.server.bundles[name] = data
        return data

    def start(self, manager: OtaManager, name: str, *, campaign: str = "17",
              release: str = "1.4.0", cmd_id: str | None = None) -> None:
        data = self.server.bundles[name]
        manager.command(cmd_id or f"c-{campaign}-{name}", DEVICE, {
            "v": 1, "id": cmd_id or f"c-{campaign}-{name}", "op": "start",
            "campaign": campaign, "release": release, "url": self.server.url(name),
            "token": TOKEN, "sha256": sha256(data), "size": len(data)})

    def phases(self, campaign: str | None = None) -> list[str]:
        return [e["phase"] for e in self.events
                if campaign is None or e["campaign"] == campaign]

    async def until(self, what: Callable[[], bool], timeout: float = 20.0,
                    describe: str = "the manager") -> None:
        """Wait (on the manager's own loop) until ``what`` holds."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not what():
            if loop.time() > end:
                seen = [(e["campaign"], e["phase"], e.get("reason")) for e in self.events]
                raise AssertionError(f"timed out waiting for {describe}; events: {seen}")
            await asyncio.sleep(0.01)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    server = BundleServer()
    try:
        yield Rig(tmp_path, make_keys(tmp_path / "keys"), server)
    finally:
        server.close()


async def running(manager: OtaManager, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` while ``manager.run`` runs; stop it afterwards (its job file flushed)."""
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    await asyncio.sleep(0)
    try:
        await body()
    finally:
        stop.set()
        await task


# -- the pure deadline -------------------------------------------------------------------------
@pytest.mark.parametrize(("phase", "committed", "since", "trial_after", "expected"), [
    ("committed", 100.0, 100.0, 30.0, 160.0),   # boot_timeout_s after the commit
    ("trial", 100.0, 150.0, 30.0, 240.0),       # the trial period, then boot_timeout_s
    ("trial", 100.0, 101.0, 0.0, None),         # confirmed by hand: nothing to wait for
    ("trial", 100.0, 100.0, 1.0, 161.0),
])
def test_a_committed_delivery_waits_for_the_boot_and_the_trial_period(
        phase: str, committed: float, since: float, trial_after: float,
        expected: float | None) -> None:
    assert boot_deadline(phase, committed, since, boot_timeout_s=60,
                         trial_after_s=trial_after) == expected


# -- the clock ---------------------------------------------------------------------------------
class SteppedClock:
    """``time`` as gateway.ota reads it, with a wall clock and a monotonic clock the test
    steps separately (an NTP correction steps only the wall clock); counts the reads, so a
    test can wait until the manager has looked at the clock again."""

    def __init__(self) -> None:
        import time as real

        self._real = real
        self.wall = 1_700_000_000.0
        self.mono = 1_000.0
        self.reads = 0

    def time(self) -> float:
        self.reads += 1
        return self.wall

    def monotonic(self) -> float:
        self.reads += 1
        return self.mono

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_wall_clock_step_neither_fails_nor_stretches_a_committed_delivery(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Pi without a real-time clock boots in the past and NTP steps it by hours: the boot
    and trial windows are durations and must not notice."""
    clock = SteppedClock()
    monkeypatch.setattr(ota_module, "time", clock)
    monkeypatch.setattr(ota_module, "WATCH_STEP_S", 0.01, raising=False)
    rig.release("tiny")
    manager = rig.manager(boot_timeout_s=60)

    async def looked_again(n: int = 5) -> None:
        seen = clock.reads
        await rig.until(lambda: clock.reads >= seen + n, describe="the watcher's next look")

    async def body() -> None:
        rig.start(manager, "tiny")
        await rig.until(lambda: "committed" in rig.phases(), describe="committed")
        clock.wall += 6 * 3600  # NTP: six hours forward
        await looked_again()
        assert manager.jobs[DEVICE].phase == "committed", rig.phases()
        clock.wall -= 12 * 3600  # and a step back: nothing is stretched either
        clock.mono += 61  # a minute passes without the node coming back
        await rig.until(lambda: manager.jobs[DEVICE].final, describe="the boot time-out")

    asyncio.run(running(manager, body))
    last = rig.events[-1]
    assert (last["phase"], last["reason"]) == ("failed", "timeout"), last


# -- a node without the window -----------------------------------------------------------------
def test_a_node_without_an_ota_window_fails_at_once_as_unsupported(rig: Rig) -> None:
    """An old firmware answers the window's registers with exception 02: no retry helps, so
    the delivery ends at once instead of after device_timeout_s (ten minutes by default)."""
    rig.release("tiny")
    bus = OldFirmwareBus()
    manager = rig.manager(poller=Poller(bus), transfer=None, device_timeout_s=600)

    async def body() -> None:
        rig.start(manager, "tiny")
        await rig.until(lambda: manager.jobs[DEVICE].final, timeout=15,
                        describe="the delivery to end")

    asyncio.run(running(manager, body))
    last = rig.events[-1]
    assert (last["phase"], last["reason"]) == ("failed", "unsupported"), last
    assert "exception 02" in last["detail"]
    assert bus.offers == 1, "offered again to a node that cannot take it"


# -- which start starts what -------------------------------------------------------------------
def test_a_new_campaign_replaces_an_ended_job_and_waits_for_a_running_one(rig: Rig) -> None:
    rig.release("tiny")
    manager = rig.manager()

    async def body() -> None:
        rig.start(manager, "tiny", campaign="17")
        await rig.until(lambda: "committed" in rig.phases("17"), describe="17 committed")
        manager.confirmed(DEVICE, "1.4.0")
        assert rig.phases("17")[-1] == "confirmed"
        rig.start(manager, "tiny", campaign="17", cmd_id="again")  # a repeat: re-reported
        assert rig.phases("17")[-1] == "confirmed" and "18" not in {
            e["campaign"] for e in rig.events}
        # campaign 18 ships the same bundle: a delivery of its own, not 17's re-reported
        rig.start(manager, "tiny", campaign="18")
        await rig.until(lambda: "committed" in rig.phases("18"), describe="18 committed")
        assert rig.phases("18")[0] == "accepted"
        assert manager.jobs[DEVICE].campaign == "18"
        # while 18 runs, a start of campaign 19 is refused as busy (the ack's ok:false)
        with pytest.raises(ValueError, match=r"^busy: fire-1 is receiving campaign 18"):
            rig.start(manager, "tiny", campaign="19")
        assert manager.jobs[DEVICE].campaign == "18"
        assert not rig.phases("19")

    asyncio.run(running(manager, body))
    assert rig.phases("17").count("confirmed") == 2  # its end, then the repeat's re-report
    saved = json.loads((rig.storage / "ota-jobs.json").read_text())["jobs"][DEVICE]
    assert saved["campaign"] == "18"


# -- the offer's jitter ------------------------------------------------------------------------
class Draws:
    """``random.Random`` as the manager uses it: the draws it asks for, each answered with
    ``share`` of the range."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.asked: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.asked.append((a, b))
        return a + self.share * (b - a)


def test_a_transfer_starts_at_a_random_moment_within_the_jitter_and_a_resumed_one_at_once(
        rig: Rig) -> None:
    """A campaign does not hit every bus at the same instant: each verified delivery waits a
    draw from [0, offer_jitter_s] before it offers. A transfer interrupted by a restart goes on
    at once: its node is mid-image, and waiting again only lengthens the outage."""
    rig.release("tiny")
    draws = Draws(0.8)
    started: list[float] = []

    async def held_transfer(bus: Any, address: int, stream: bytes, *,
                            progress: Callable[[int, int], None],
                            on_commit: Callable[[], None] | None = None) -> None:
        started.append(time.monotonic())
        progress(0, len(stream))
        await asyncio.sleep(3600)  # the gateway stops while the image is on its way

    manager = rig.manager(transfer=held_transfer, rng=draws, offer_jitter_s=0.5)
    verified_at: list[float] = []
    publish = manager.publish

    def stamped(messages: list[Message]) -> None:
        verified_at.extend(time.monotonic() for m in messages if m.body["phase"] == "verified")
        publish(messages)

    manager.publish = stamped

    async def first_run() -> None:
        rig.start(manager, "tiny")
        await rig.until(lambda: bool(started), describe="the transfer to start")

    asyncio.run(running(manager, first_run))
    assert draws.asked == [(0, 0.5)]
    assert started[0] - verified_at[0] >= 0.4  # the draw (0.8 x 0.5 s), not at once
    assert rig.phases()[-1] == "transferring"

    again = Draws(1.0)
    started.clear()
    resumed = rig.manager(transfer=held_transfer, rng=again, offer_jitter_s=0.5)

    async def second_run() -> None:
        await rig.until(lambda: bool(started), describe="the resumed transfer to start")

    asyncio.run(running(resumed, second_run))
    assert again.asked == [], "a resumed transfer waited for a new draw"


# -- key rotation ------------------------------------------------------------------------------
def test_the_gateway_adopts_a_rotated_key_set_once_a_device_confirmed_it(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """Release 1.4.0 (old key) carries key set v2: the new key, the old one revoked. Once a
    node confirmed it, 1.5.0 signed by the new key is relayed, and anything signed by the old
    key is refused as revoked, also after a gateway restart."""
    new_key = rig.tmp / "keys" / "release-2027.key"
    rel.generate_key(new_key)
    old_id = rel.load_trust(rig.keys.trust).keys.keys.copy().popitem()[0]
    rotated = rel.make_keyset(2, [new_key.with_suffix(".pub")], [old_id])
    rig.release("rotating", (1, 4, 0), carries=rotated)
    rig.release("new-key", (1, 5, 0), key=new_key)
    rig.release("old-key", (1, 6, 0))
    manager = rig.manager()
    caplog.set_level(logging.INFO, logger="gateway.ota")

    async def body() -> None:
        rig.start(manager, "rotating", campaign="1")
        await rig.until(lambda: "committed" in rig.phases("1"), describe="1 committed")
        assert not (rig.storage / "ota-trust.json").exists(), "adopted before the confirm"
        manager.confirmed(DEVICE, "1.4.0")
        await manager.flush()
        rig.start(manager, "new-key", campaign="2", release="1.5.0")
        await rig.until(lambda: manager.jobs[DEVICE].final or
                        manager.jobs[DEVICE].phase == "committed", describe="2 verified")

    asyncio.run(running(manager, body))
    assert "verified" in rig.phases("2"), rig.events[-1]
    trust = json.loads((rig.storage / "ota-trust.json").read_text())
    assert trust["keys"]["version"] == 2 and trust["keys"]["revoked"] == [old_id]
    assert (rig.storage / "ota-trust.json").stat().st_mode & 0o777 == 0o600
    adopted = [r.getMessage() for r in caplog.records if "adopted key set v2" in r.getMessage()]
    assert adopted and rotated.keys.copy().popitem()[0] in adopted[0] and old_id in adopted[0]
    public_hex = next(iter(rotated.keys.values())).hex()
    assert public_hex not in caplog.text, "key material in the log"

    # a restart keeps the adopted key set: the old key's release is refused as revoked
    rig.events.clear()
    restarted = rig.manager()

    async def after_restart() -> None:
        restarted.confirmed(DEVICE, "1.5.0")  # the 1.5.0 delivery ends first
        rig.start(restarted, "old-key", campaign="3", release="1.6.0")
        await rig.until(lambda: restarted.jobs[DEVICE].campaign == "3"
                        and restarted.jobs[DEVICE].final, describe="3 refused")

    asyncio.run(running(restarted, after_restart))
    last = rig.events[-1]
    assert (last["campaign"], last["phase"], last["reason"]) == ("3", "failed", "revoked_key")
