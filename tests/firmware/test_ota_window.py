"""A signed release through the OTA register window of a real node (MicroPython unix port on the
simulator's bus, .mpy bytecode under the 64 KB heap cap a node must live in, its sensors fed):
the node receives the stream, reboots, verifies the slot itself, runs the new image as a trial;
a tampered file, a manifest signed by an unknown or a revoked key and a downgrade are refused
with their reason readable in ota_reason and the node keeps its old image; a power cut
mid-transfer is resumed, not restarted; the check boot feeds the watchdog."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.release import KeySet, canonical
from gateway.ota_transfer import OtaFailed, OtaRefused, image_from_release, send_image
from gateway.rtu import ModbusError, NoResponse, RtuBus
from hardware.mpy import compile_module
from hardware.ota_image import Offer, OtaStatus, chunk_words
from hardware.regmap import load_maps
from hardware.sim.simbus import (
    EXIT_REBOOT,
    EXIT_WATCHDOG,
    FIRMWARE_DIR,
    NodeProcess,
    SimBus,
    micropython_executable,
)
from hardware.sim.simrun import attach_physics
from provisioning import release as rel
from tests.conftest import wait_for

FIRMWARE_APP = Path(__file__).resolve().parents[2] / "firmware" / "app"
MAPS = load_maps()
TRIAL = 1 << next(b.bit for b in MAPS.status_bits if b.name == "trial")
CONFIRM = MAPS.commands["confirm_image"]
HEAP = "64K"   # every class must run, and take an update, under this cap (docs/firmware-boot.md)


def _source(d: Path, name: str, version: tuple[int, int, int], whole: bool = True) -> Path:
    """The app as `release` would build it at `version`; not whole: only its version module
    (a small release for the refusals that come before any file is looked at)."""
    source = d / name
    if whole:
        shutil.copytree(FIRMWARE_APP, source, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        source.mkdir()
    (source / "version.py").write_text(f"VERSION = {version}\n")   # what `release` bumps
    return source


def _resigned(release: Path, out: Path, key: Path, change: dict[str, object],
              keyset: KeySet | None = None) -> Path:
    """A copy of a release with its manifest changed and signed again: the same compiled app
    under another class or carrying a key set, without compiling it again."""
    shutil.copytree(release, out)
    body = json.loads((out / "manifest.json").read_bytes())
    (out / "manifest.json").write_bytes(canonical({**body, **change}))
    rel.sign(out, key, keyset)
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ota-window")
    rel.generate_key(d / "k.key")
    rel.generate_key(d / "k2.key")   # the key a rotation brings in: unknown to the node before
    (d / "trust.json").write_text(json.dumps(
        rel.device_trust(rel.make_keyset(1, [d / "k.pub"], []), (1, 0, 0))))
    good = rel.build(d / "good-fire", version=(1, 4, 0), min_version=(1, 0, 0),
                     device_class="fire", board="esp32", source=_source(d, "src", (1, 4, 0)))
    rel.sign(good, d / "k.key")
    (d / "good").symlink_to(good)
    _resigned(good, d / "good-air", d / "k.key", {"class": "air"})   # the same app, for air
    tampered = Path(shutil.copytree(d / "good", d / "tampered"))
    node = tampered / "files" / "app" / "aqi.mpy"
    data = bytearray(node.read_bytes())
    data[len(data) // 2] ^= 0x20
    node.write_bytes(bytes(data))
    return d


@pytest.fixture
def sim(lab: Path, request: pytest.FixtureRequest) -> Iterator[SimBus]:
    """One node at address 1 (fire unless parametrized), .mpy, 64 KB heap, sensors fed."""
    cls = getattr(request, "param", "fire")
    bus = SimBus([(1, cls)], baud=115200, paced=False, compiled=True, heap=HEAP)
    (bus.nodes[0].root / "data" / "trust.json").write_text((lab / "trust.json").read_text())
    attach_physics(bus)
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


@pytest.mark.parametrize("sim", ["fire", "air"], indirect=True)
def test_a_signed_release_is_received_verified_by_the_node_and_boots_as_a_trial(
        sim: SimBus, lab: Path) -> None:
    """Fire and air are the classes with the least heap to spare (about 59 KB live of 64 KB):
    the whole transfer, the check boot and the trial run under the cap."""
    node = sim.nodes[0]
    stream = image_from_release(lab / f"good-{node.cls}")
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
    assert node.events.crash_resets == 0, node.events.lines[-8:]   # no MemoryError reset


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


def _small_release(lab: Path, name: str, version: tuple[int, int, int], key: str,
                   min_version: tuple[int, int, int] = (1, 0, 0)) -> bytes:
    """A release of one file (the app's version module) signed by `key`: enough for a refusal
    the node makes on the manifest, before it looks at any file, and cheap to send."""
    out = lab / name
    if not out.exists():
        rel.build(out, version=version, min_version=min_version, device_class="fire",
                  board="esp32", source=_source(lab, f"src-{name}", version, whole=False))
        rel.sign(out, lab / key)
    return image_from_release(out)


async def _refused(bus: RtuBus, stream: bytes) -> tuple[OtaRefused, list[int], OtaStatus]:
    with pytest.raises(OtaRefused) as err:
        await send_image(bus, 1, stream, progress=lambda a, b: None)
    return err.value, await _ready(bus), await _ota_status(bus)


def test_a_downgrade_is_refused_by_the_node_below_its_floor(sim: SimBus, lab: Path) -> None:
    stream = _small_release(lab, "old", (0, 9, 0), "k.key", min_version=(0, 9, 0))

    async def go() -> tuple[OtaRefused, list[int]]:
        async with RtuBus(sim.master_path, 115200, timeout=0.5) as bus:
            await _ready(bus)
            with pytest.raises(OtaRefused) as err:
                await send_image(bus, 1, stream, progress=lambda a, b: None)
            return err.value, await _ready(bus)

    refused, identity = asyncio.run(go())
    assert (refused.code, refused.reason) == (5, "downgrade")
    assert identity[2:5] == [0, 1, 0]


def test_a_manifest_signed_by_an_unknown_key_is_refused_by_the_node(
        sim: SimBus, lab: Path) -> None:
    stream = _small_release(lab, "by-k2", (1, 4, 1), "k2.key")   # k2: not in the node's trust

    async def go() -> tuple[OtaRefused, list[int], OtaStatus]:
        async with RtuBus(sim.master_path, 115200, timeout=0.5) as bus:
            await _ready(bus)
            return await _refused(bus, stream)

    refused, identity, status = asyncio.run(go())
    assert (refused.code, refused.reason) == (3, "unknown key")
    assert (status.state, status.reason) == ("refused", 3)
    assert identity[2:5] == [0, 1, 0] and not identity[5] & TRIAL   # the old image runs


def test_after_a_key_rotation_a_release_signed_by_the_revoked_key_is_refused_by_the_node(
        sim: SimBus, lab: Path) -> None:
    """The round trip through the window: a release signed by the current key k carries a new
    key set (k2 in, k revoked); the node verifies it, runs it as a trial, is confirmed (the
    gateway's command) and adopts the key set at its next boot; from then on a release signed
    by k is refused as revoked, and the rotated image keeps running. (The rotation is the good
    release signed again with the key set in it: no second build.)"""
    rotation = lab / "rotation"
    if not rotation.exists():
        revoked = json.loads((lab / "k.pub").read_text())["keyid"]
        _resigned(lab / "good-fire", rotation, lab / "k.key", {},
                  rel.make_keyset(2, [lab / "k2.pub"], [revoked]))
    by_revoked = _small_release(lab, "by-k", (1, 5, 1), "k.key")

    async def go() -> tuple[list[int], OtaRefused, list[int], OtaStatus]:
        async with RtuBus(sim.master_path, 115200, timeout=0.5) as bus:
            await _ready(bus)
            await send_image(bus, 1, image_from_release(rotation), progress=lambda a, b: None)
            trial = await _ready(bus)
            await bus.write_register(1, 0, CONFIRM)
            return (trial,) + await _refused(bus, by_revoked)

    trial, refused, identity, status = asyncio.run(go())
    assert trial[2:5] == [1, 4, 0] and trial[5] & TRIAL
    assert (refused.code, refused.reason) == (4, "revoked key")
    assert (status.state, status.reason) == ("refused", 4)
    assert identity[2:5] == [1, 4, 0] and not identity[5] & TRIAL   # confirmed, still running
    trust = json.loads((sim.nodes[0].root / "data" / "trust.json").read_text())
    assert trust["keys"]["version"] == 2


def _pending_check(lab: Path, root: Path) -> Path:
    """A node's flash whose transfer record says verify pending, with the stream of a whole
    release (about 200 KB) received: what the check boot finds. Slot a runs the release's own
    .mpy files (built once, in lab), the root holds main.py, picker and record as a board's."""
    (root / "data").mkdir(parents=True)
    shutil.copytree(lab / "good" / "files" / "app", root / "a" / "app")
    shutil.copyfile(FIRMWARE_DIR / "main.py", root / "main.py")
    for name in ("picker", "record"):
        compile_module(FIRMWARE_DIR / f"{name}.py", root / f"{name}.mpy")
    (root / "data" / "node.json").write_text(json.dumps({"class": "fire", "address": 1,
                                                         "board": "esp32"}))
    shutil.copyfile(lab / "trust.json", root / "data" / "trust.json")
    stream = image_from_release(lab / "good")
    (root / "data" / "ota.img").write_bytes(stream)
    body = json.dumps({"id": "x", "size": len(stream), "cb": 240, "n": -(-len(stream) // 240),
                       "tries": 0, "slot": "b", "regs": [2, 0, 0, 0, 0, 1, 4, 0]}).encode()
    (root / "data" / "ota.json").write_bytes(b"%08x\n" % zlib.crc32(body) + body)
    return root


def _check_boot(root: Path, watchdog_ms: int) -> tuple[int, float]:
    """main.py alone (no bus) on that flash, as the board boots after a commit: its exit code
    (75: the reset that ends a finished check) and its wall time."""
    started = time.monotonic()
    done = subprocess.run([micropython_executable(), "-X", f"heapsize={HEAP}", "main.py"],
                          cwd=root, env=dict(os.environ, EF_ROOT=".", EF_WDT_MS=str(watchdog_ms)),
                          capture_output=True, timeout=60)
    return done.returncode, time.monotonic() - started


def test_the_check_boot_feeds_the_watchdog_through_a_whole_image(
        lab: Path, tmp_path: Path) -> None:
    """On an ESP32 the check (unpacking ~200 KB into LittleFS, a pure-Python Ed25519, the
    SHA-256 of every file) is 50-200x slower than here and its watchdog is 8 s. Scaled down:
    the check's own duration here, the best of two boots without a watchdog, and a watchdog of
    a third of it. A check that fed only before it began (the old one) is reset every time;
    this one feeds between files, blocks and steps of the verifier, and completes. A boot the
    loaded host stalls for longer than the watchdog is not a board's: the watched check gets
    three boots to complete once (the old check never could: its work alone is 3x too long)."""
    pending = _pending_check(lab, tmp_path / "flash")

    def boot(name: str, watchdog_ms: int) -> tuple[int, float, Path]:
        root = Path(shutil.copytree(pending, tmp_path / name))
        return (*_check_boot(root, watchdog_ms), root)

    runs = [boot(f"unwatched{i}", 0) for i in range(2)]
    assert [code for code, _, _ in runs] == [EXIT_REBOOT] * 2
    watchdog_ms = max(30, int(min(seconds for _, seconds, _ in runs) * 1000 / 3))
    codes = []
    for i in range(3):
        code, _, root = boot(f"watched{i}", watchdog_ms)
        codes.append(code)
        if code != EXIT_WATCHDOG:
            break
    assert codes[-1] != EXIT_WATCHDOG, f"reset by a {watchdog_ms} ms watchdog in 3 checks"
    assert codes[-1] == EXIT_REBOOT
    record = (root / "data" / "ota.json").read_bytes().split(b"\n", 1)[1]
    assert json.loads(record)["regs"][0] == 3   # staged: the check ran to its end


@pytest.mark.slow
def test_a_power_cut_after_every_chunk_is_always_resumed_to_a_verified_image(
        lab: Path) -> None:
    """The exhaustive sweep (nox -s soak): one node, one power cut after each chunk in turn
    (every chunk of the stream, each a checkpoint or between two), each followed by a resumed
    transfer; the node always answers and ends on the verified image."""
    stream = image_from_release(lab / "good")
    chunks = -(-len(stream) // 240)
    for cut_after in range(1, chunks):
        bus = SimBus([(1, "fire")], baud=115200, paced=False, compiled=True, heap=HEAP)
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


# Power cuts at the flash's write steps, the MCUboot simulator's way: the simulator's power-fail
# hook (hardware/sim/powercut.py) counts every file open for writing, rename, remove, mkdir and
# rmdir the node makes through its own code, over every boot, and SIGKILLs the node at the Nth.
# The hook's own code costs the interpreter about 2.2 KB of heap (measured: gc.mem_alloc with
# and without it), so a counted node gets that much more than HEAP: the firmware keeps its 64 KB.
HOOKED_HEAP = "67K"
VERIFIED = ([0, 1, 0], [1, 4, 0])   # the images a node may boot: the old one or the release


def _counted_bus(lab: Path, count: int) -> SimBus:
    bus = SimBus([(a, "fire") for a in range(1, count + 1)], baud=115200, paced=False,
                 compiled=True, heap=HOOKED_HEAP)
    for node in bus.nodes:
        (node.root / "data" / "trust.json").write_text((lab / "trust.json").read_text())
        node.count_writes()
    attach_physics(bus)
    return bus


def _committed(root: Path, stream: bytes) -> None:
    """A node's flash as the commit leaves it: the stream received, the record verify pending
    (the id is the offer's, as app/ota_offer.py writes it), so its next boot is the check."""
    (root / "data" / "ota.img").write_bytes(stream)
    offer = b"".join(w.to_bytes(2, "big") for w in Offer.of(stream).words())
    body = json.dumps({"id": offer[:46].hex(), "size": len(stream), "cb": 240,
                       "n": -(-len(stream) // 240), "tries": 0, "slot": "b",
                       "regs": [2, 0, 0, 0, 0, 1, 4, 0]}).encode()
    (root / "data" / "ota.json").write_bytes(b"%08x\n" % zlib.crc32(body) + body)


@pytest.fixture(scope="module")
def update_steps(lab: Path) -> tuple[list[str], int]:
    """The write steps of a whole update, uncut (the numbering every cut below uses): one node
    from the offer until it answers as a trial, and how many of them the transfer made (the
    check boot's first write is the next)."""
    bus = _counted_bus(lab, 1)
    node = bus.nodes[0]
    assert node.writes is not None

    async def go() -> tuple[list[str], int]:
        async with RtuBus(bus.master_path, 115200, timeout=0.5) as rtu:
            await _ready(rtu)
            base = len(node.writes or [])
            await send_image(rtu, 1, image_from_release(lab / "good"),
                             progress=lambda a, b: None)
            identity = await _ready(rtu)
            assert identity[2:5] == [1, 4, 0] and identity[5] & TRIAL
            assert len(node.boots_at) == 3   # the first boot, the check, the switch
            return list(node.writes or [])[base:], node.boots_at[1] - base

    with bus:
        return asyncio.run(go())


def _named_steps(steps: list[str]) -> list[int]:
    """The cut points of the default run: the first write, the middle of the unpacking, every
    record's rename (its commit point; a cut at its temporary file leaves the same old record,
    the soak cuts there too), every remove and the last write of the switch."""
    records = [i for i, step in enumerate(steps, 1) if step.startswith(("rename", "remove"))]
    unpacked = [i for i, step in enumerate(steps, 1) if step.startswith(("open ./b/", "mkdir ./b"))]
    return sorted({1, unpacked[len(unpacked) // 2], *records, len(steps)})


def _cut_in_check_and_switch(lab: Path, steps: list[str], cuts: list[int]) -> None:
    """One node per cut point, all on one bus: each powers up on a committed release and loses
    power at its write step; each must come back on a verified image, and the same offer
    then ends with the release verified and running as a trial."""
    stream = image_from_release(lab / "good")
    bus = _counted_bus(lab, len(cuts))
    for node, step in zip(bus.nodes, cuts, strict=True):
        _committed(node.root, stream)
        node.power_cut_at(step)

    async def go() -> None:
        async with RtuBus(bus.master_path, 115200, timeout=0.5) as rtu:
            for node, step in zip(bus.nodes, cuts, strict=True):
                what = f"cut at step {step} of {len(steps)} ({steps[step - 1]})"
                wait_for(lambda node=node: node.events.power_cuts, 30, what=what)
                identity = await _ready_at(rtu, node.address)
                assert identity[2:5] in VERIFIED, what
                await send_image(rtu, node.address, stream, progress=lambda a, b: None)
                identity = await _ready_at(rtu, node.address)
                assert identity[2:5] == [1, 4, 0] and identity[5] & TRIAL, what
                assert node.events.power_cuts == 1 and node.events.crash_resets == 0, what

    with bus:
        asyncio.run(go())


async def _ready_at(bus: RtuBus, address: int) -> list[int]:
    for _ in range(100):
        try:
            return await bus.read_input(address, 0, 6)
        except NoResponse:
            await asyncio.sleep(0.1)
    raise AssertionError(f"node {address} never answered")


def test_a_power_cut_at_each_record_write_of_the_check_and_the_switch_boots_a_verified_image(
        lab: Path, update_steps: tuple[list[str], int]) -> None:
    """The check boot (the slot record, the unpacking into the inactive slot, the trust the
    release brings, the slot record staged, the transfer record, the stream dropped) and the
    switch (the picker's slot record, the boot counter) cut at their first write, in the
    middle of the unpacking, at every record write and at the last one."""
    check_steps = update_steps[0][update_steps[1]:]   # numbered from the check's first write
    _cut_in_check_and_switch(lab, check_steps, _named_steps(check_steps))


@pytest.mark.slow
@pytest.mark.timeout(900)   # 70 cuts, eight nodes a bus: about 2 min
def test_a_power_cut_at_every_write_of_the_check_and_the_switch_boots_a_verified_image(
        lab: Path, update_steps: tuple[list[str], int]) -> None:
    """The exhaustive sweep (nox -s soak): every write step in turn, eight nodes a bus."""
    check_steps = update_steps[0][update_steps[1]:]
    cuts = list(range(1, len(check_steps) + 1))
    for first in range(0, len(cuts), 8):
        _cut_in_check_and_switch(lab, check_steps, cuts[first:first + 8])


def _cut_at_random(lab: Path, update: tuple[list[str], int], seed: int, count: int) -> None:
    """Nodes that each take the whole update with a cut at a random write step of it (numbered
    as the uncut update's, update_steps). Each must come back on a verified image; a cut in
    the transfer after a checkpoint was recorded is resumed from a checkpoint (never from 0);
    every update ends verified and running."""
    stream = image_from_release(lab / "good")
    steps, transfer = update
    rng = random.Random(seed)
    bus = _counted_bus(lab, count)

    async def update_node(rtu: RtuBus, node: NodeProcess, what: str) -> list[tuple[int, int]]:
        """The update, offered again after a cut that stopped it: (cuts so far, bytes done)
        at every progress call."""
        seen: list[tuple[int, int]] = []

        def progress(done: int, total: int) -> None:
            seen.append((node.events.power_cuts, done))

        for _ in range(3):
            try:
                await send_image(rtu, node.address, stream, progress=progress)
                return seen
            except (OtaFailed, NoResponse, ModbusError):
                identity = await _ready_at(rtu, node.address)   # powered up again
                assert identity[2:5] in VERIFIED, what
        raise AssertionError(f"{what}: the update never completed")

    async def go() -> None:
        async with RtuBus(bus.master_path, 115200, timeout=0.5) as rtu:
            for node in bus.nodes:
                assert node.writes is not None
                step = rng.randint(1, len(steps))
                what = (f"seed {seed}: cut at step {step} of {len(steps)} ({steps[step - 1]}),"
                        f" node {node.address}")
                await _ready_at(rtu, node.address)
                node.power_cut_at(len(node.writes) + step)
                seen = await update_node(rtu, node, what)
                wait_for(lambda node=node: node.events.power_cuts, 30, what=what)
                identity = await _ready_at(rtu, node.address)
                assert identity[2:5] == [1, 4, 0] and identity[5] & TRIAL, what
                assert node.events.power_cuts == 1 and node.events.crash_resets == 0, what
                records = steps[:step - 1].count("rename ./data/ota.json")
                after = [done for cuts, done in seen if cuts]   # progress since the cut
                if step <= transfer and records >= 2 and after:   # a checkpoint was recorded
                    # send_image reports the resume point first: a checkpoint, never 0 (none
                    # after the cut: the checkpoint held every chunk, only the commit was left)
                    assert min(after) > 0, f"{what}: restarted from 0"
                    assert after[0] % (16 * 240) == 0 or after[0] == len(stream), \
                        f"{what}: resumed at {after[0]}, not at a checkpoint"

    with bus:
        asyncio.run(go())


def _seed() -> int:
    return int(os.environ.get("EF_POWERCUT_SEED") or time.time_ns() % 100000)


def test_a_power_cut_at_random_write_steps_of_an_update_always_ends_on_a_verified_image(
        lab: Path, update_steps: tuple[list[str], int]) -> None:
    """Three cuts at random write steps of the whole update (transfer, check, switch): the
    seed is in every assertion message (EF_POWERCUT_SEED=<seed> runs the same cuts again)."""
    _cut_at_random(lab, update_steps, _seed(), 3)


@pytest.mark.slow
@pytest.mark.timeout(1800)   # 50 updates and their cuts: about 5 s each on a loaded host
def test_a_power_cut_at_fifty_random_write_steps_always_ends_on_a_verified_image(
        lab: Path, update_steps: tuple[list[str], int]) -> None:
    seed = _seed()
    for batch in range(10):
        _cut_at_random(lab, update_steps, seed + batch, 5)
