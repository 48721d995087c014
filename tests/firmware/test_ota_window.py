"""A signed release through the OTA register window of a real node (MicroPython unix port on the
simulator's bus): the node receives the stream, reboots, verifies the slot itself, runs the new
image as a trial; a tampered release is refused with its reason readable in ota_reason and the
node keeps its old image; a power cut mid-transfer is resumed, not restarted."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ota_transfer import OtaRefused, image_from_release, send_image
from gateway.rtu import ModbusError, NoResponse, RtuBus
from hardware.ota_image import Offer, OtaStatus, chunk_words
from hardware.regmap import load_maps
from hardware.sim.simbus import SimBus
from provisioning import release as rel
from tests.conftest import wait_for

FIRMWARE_APP = Path(__file__).resolve().parents[2] / "firmware" / "app"
MAPS = load_maps()
TRIAL = 1 << next(b.bit for b in MAPS.status_bits if b.name == "trial")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ota-window")
    rel.generate_key(d / "k.key")
    (d / "trust.json").write_text(json.dumps(
        rel.device_trust(rel.make_keyset(1, [d / "k.pub"], []), (1, 0, 0))))
    source = d / "src"
    shutil.copytree(FIRMWARE_APP, source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "version.py").write_text("VERSION = (1, 4, 0)\n")   # what `release` bumps
    good = rel.build(d / "good", version=(1, 4, 0), min_version=(1, 0, 0),
                     device_class="fire", board="esp32", source=source)
    rel.sign(good, d / "k.key")
    tampered = Path(shutil.copytree(good, d / "tampered"))
    node = tampered / "files" / "app" / "aqi.mpy"
    data = bytearray(node.read_bytes())
    data[len(data) // 2] ^= 0x20
    node.write_bytes(bytes(data))
    return d


@pytest.fixture
def sim(lab: Path) -> Iterator[SimBus]:
    bus = SimBus([(1, "fire")], baud=115200, paced=False, compiled=True)
    (bus.nodes[0].root / "data" / "trust.json").write_text((lab / "trust.json").read_text())
    with bus:
        yield bus


async def _ready(bus: RtuBus) -> list[int]:
    for _ in range(100):
        try:
            return await bus.read_input(1, 0, 6)
        except NoResponse:
            await asyncio.sleep(0.1)
    raise AssertionError("the node never answered")


async def _ota_status(bus: RtuBus) -> OtaStatus:
    return OtaStatus.decode(await bus.read_input(1, MAPS.ota.base, MAPS.ota.input_words))


def test_a_signed_release_is_received_verified_by_the_node_and_boots_as_a_trial(
        sim: SimBus, lab: Path) -> None:
    stream = image_from_release(lab / "good")
    seen: list[tuple[int, int]] = []
    at_commit: list[tuple[tuple[int, int], bool]] = []

    def on_commit() -> None:  # the gateway's job turns committed here (no cancel after it)
        verified = any("slot b verified" in line for line in sim.nodes[0].events.lines)
        at_commit.append((seen[-1], verified))

    async def go() -> tuple[list[int], OtaStatus]:
        async with RtuBus(sim.master_path, 115200, timeout=0.5) as bus:
            assert (await _ready(bus))[2:5] == [0, 1, 0]
            await send_image(bus, 1, stream, progress=lambda a, b: seen.append((a, b)),
                             on_commit=on_commit)
            return await _ready(bus), await _ota_status(bus)

    identity, status = asyncio.run(go())
    assert identity[2:5] == [1, 4, 0]            # the new image runs ...
    assert identity[5] & TRIAL                   # ... as a trial until the gateway confirms
    assert (status.state, status.reason, status.version) == ("staged", 0, (1, 4, 0))
    assert seen[-1] == (len(stream), len(stream))
    assert any("slot b verified" in line for line in sim.nodes[0].events.lines)
    # on_commit came once, with every byte acknowledged and before the node's verify boot
    assert at_commit == [((len(stream), len(stream)), False)]


def test_a_tampered_file_is_refused_by_the_node_with_its_reason_and_the_old_image_runs(
        sim: SimBus, lab: Path) -> None:
    stream = image_from_release(lab / "tampered")

    async def go() -> tuple[OtaRefused, list[int], OtaStatus]:
        async with RtuBus(sim.master_path, 115200, timeout=0.5) as bus:
            await _ready(bus)
            with pytest.raises(OtaRefused) as err:
                await send_image(bus, 1, stream, progress=lambda a, b: None)
            return err.value, await _ready(bus), await _ota_status(bus)

    refused, identity, status = asyncio.run(go())
    assert refused.reason == "bad hash"
    assert identity[2:5] == [0, 1, 0] and not identity[5] & TRIAL
    assert (status.state, status.reason) == ("refused", 6)


@pytest.mark.parametrize("cut_after", [40, 200])
def test_a_power_cut_mid_transfer_is_resumed_from_the_nodes_checkpoint(
        sim: SimBus, lab: Path, cut_after: int) -> None:
    stream = image_from_release(lab / "good")
    node = sim.nodes[0]

    async def go() -> tuple[int, list[int]]:
        async with RtuBus(sim.master_path, 115200, timeout=0.5) as bus:
            await _ready(bus)

            def cut(done: int, total: int) -> None:
                if done >= cut_after * 240:
                    node.kill()   # SIGKILL: the supervisor powers it up again
                    raise RuntimeError("power cut")

            with pytest.raises(RuntimeError, match="power cut"):
                await send_image(bus, 1, stream, progress=cut)
            await _ready(bus)
            status = await _ota_status(bus)
            assert status.state == "receiving"
            first: list[int] = []
            await send_image(bus, 1, stream,
                             progress=lambda a, b: first.append(a) if not first else None)
            return first[0], await _ready(bus)

    resumed_at, identity = asyncio.run(go())
    assert cut_after * 240 - 16 * 240 <= resumed_at <= cut_after * 240   # a checkpoint
    assert resumed_at > 0
    assert identity[2:5] == [1, 4, 0]
    wait_for(lambda: node.events.restarts >= 3, 5, what="cut, verify and trial boots")


def test_the_node_answers_a_chunk_before_it_records_its_progress_and_a_failed_record_falls_back(
        sim: SimBus, lab: Path) -> None:
    """The chunk that completes a checkpoint is answered before the progress record is written
    (flush and rename are slow on flash; the master's next chunk need not wait for them), so a
    record the flash refuses (here its temporary file's name is taken by a directory) is not
    that chunk's failure: the node falls back to its last checkpoint, says so in ota_next_chunk
    and to the next chunk (exception 02), and the transfer offered again completes from there
    once the flash takes writes."""
    stream = image_from_release(lab / "good")
    offer = Offer.of(stream)
    checkpoint = 16   # app/ota_rx.py CHECKPOINT: chunk 15 completes the first one
    blocker = sim.nodes[0].root / "data" / "ota.json.tmp"
    chunk_at = MAPS.ota.holding_register("ota_chunk").address

    async def go() -> tuple[OtaStatus, int, list[int], OtaStatus]:
        async with RtuBus(sim.master_path, 115200, timeout=0.5) as bus:
            await _ready(bus)
            await bus.write_registers(1, MAPS.ota.holding_register("ota_offer").address,
                                      offer.words(), timeout=3.0)
            blocker.mkdir()
            for index in range(checkpoint):   # every one acknowledged, the 16th included
                await bus.write_registers(1, chunk_at,
                                          chunk_words(stream, index, offer.chunk_bytes))
            fell_back = await _ota_status(bus)
            with pytest.raises(ModbusError) as refused:
                await bus.write_registers(1, chunk_at,
                                          chunk_words(stream, checkpoint, offer.chunk_bytes))
            blocker.rmdir()
            resumed: list[int] = []
            await send_image(bus, 1, stream, progress=lambda a, b: resumed.append(a))
            return fell_back, refused.value.code, resumed, await _ota_status(bus)

    fell_back, code, resumed, status = asyncio.run(go())
    assert (fell_back.state, fell_back.next_chunk) == ("receiving", 0)
    assert code == 2
    assert resumed[0] == 0 and resumed[-1] == len(stream)
    assert status.state == "staged", status   # the re-written bytes make the verified image


def _restarted(node: object, after: int, timeout: float = 20.0) -> None:
    wait_for(lambda: node.events.restarts > after, timeout,   # type: ignore[attr-defined]
             interval=0.005, what="the node's next boot")


@pytest.mark.parametrize("step", ["after_commit", "verify_boot", "trial_boot"])
def test_a_power_cut_after_the_commit_never_loses_the_node_and_the_update_completes(
        sim: SimBus, lab: Path, step: str) -> None:
    """Cut after the commit was acknowledged (before the reboot), during the boot that verifies
    the slot, and during the boot that switches to it: the node always comes back on a working
    image, and offering the same image again ends with it verified and running."""
    stream = image_from_release(lab / "good")
    node = sim.nodes[0]

    async def go() -> tuple[list[int], OtaStatus]:
        async with RtuBus(sim.master_path, 115200, timeout=0.5) as bus:
            await _ready(bus)
            boots = node.events.restarts
            await send_image(bus, 1, stream, progress=lambda a, b: None, wait_verified=False)
            if step == "after_commit":
                node.kill()
            else:
                _restarted(node, boots)          # the verify boot has begun
                if step == "trial_boot":
                    _restarted(node, boots + 1)  # the verify boot reset: the switch begins
                node.kill()
            await _ready(bus)                   # a working image answers
            await send_image(bus, 1, stream, progress=lambda a, b: None)
            return await _ready(bus), await _ota_status(bus)

    identity, status = asyncio.run(go())
    assert status.state == "staged", status
    assert identity[2:5] == [1, 4, 0] and identity[5] & TRIAL


def test_a_downgrade_is_refused_by_the_node_below_its_floor(sim: SimBus, lab: Path) -> None:
    old = lab / "old"
    if not old.exists():
        rel.build(old, version=(0, 9, 0), min_version=(0, 9, 0), device_class="fire",
                  board="esp32")
        rel.sign(old, lab / "k.key")
    stream = image_from_release(old)

    async def go() -> tuple[OtaRefused, list[int]]:
        async with RtuBus(sim.master_path, 115200, timeout=0.5) as bus:
            await _ready(bus)
            with pytest.raises(OtaRefused) as err:
                await send_image(bus, 1, stream, progress=lambda a, b: None)
            return err.value, await _ready(bus)

    refused, identity = asyncio.run(go())
    assert (refused.code, refused.reason) == (5, "downgrade")
    assert identity[2:5] == [0, 1, 0]


@pytest.mark.slow
def test_a_power_cut_after_every_chunk_is_always_resumed_to_a_verified_image(
        lab: Path) -> None:
    """The exhaustive sweep (nox -s soak): one node, one power cut after each chunk in turn
    (every chunk of the stream, each a checkpoint or between two), each followed by a resumed
    transfer; the node always answers and ends on the verified image."""
    stream = image_from_release(lab / "good")
    chunks = -(-len(stream) // 240)
    for cut_after in range(1, chunks):
        bus = SimBus([(1, "fire")], baud=115200, paced=False, compiled=True)
        (bus.nodes[0].root / "data" / "trust.json").write_text(
            (lab / "trust.json").read_text())
        with bus:
            node = bus.nodes[0]

            async def go(cut_after: int = cut_after, node: object = node,
                         bus: SimBus = bus) -> list[int]:
                async with RtuBus(bus.master_path, 115200, timeout=0.5) as rtu:
                    await _ready(rtu)

                    def cut(done: int, total: int) -> None:
                        if done >= cut_after * 240:
                            node.kill()  # type: ignore[attr-defined]
                            raise RuntimeError("power cut")

                    with pytest.raises(RuntimeError):
                        await send_image(rtu, 1, stream, progress=cut)
                    await _ready(rtu)
                    await send_image(rtu, 1, stream, progress=lambda a, b: None)
                    return await _ready(rtu)

            assert asyncio.run(go())[2:5] == [1, 4, 0], cut_after
