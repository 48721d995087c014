"""Firmware delivery from the fleet to the nodes: the ``ota`` command, one job per device.

The fleet sends ``cmd/<device>/ota`` (``contracts.mqtt.OtaCommand``); the gateway acks at once
and reports the rest as ``OtaEvent`` device events through the outbox (so they carry epoch and
seq and survive a broker outage or a restart like any device message)::

    accepted -> [downloading] -> verified -> [queued] -> transferring -> committed -> trial
             -> confirmed                                   (or failed / cancelled on the way)

What this module owns, and the rules it keeps:

- **Never relay what it cannot verify.** The bundle is fetched, checked and verified against the
  gateway's own trust, then cached by SHA-256 (:mod:`gateway.ota_bundle`); a refusal is
  ``failed`` with the release reason code. A cached bundle is verified again, not fetched again.
- **The bus sets the pace.** At most one transfer per bus at a time (:class:`BusLanes`); the
  others report ``queued``. A transfer runs through the poller's background lane
  (:class:`YieldingBus`, :meth:`gateway.poller.BusPoller.background`): each of its transactions
  waits until no poll is due, so fire detectors keep their poll rate and a fire alarm raised
  mid-transfer is published as fast as without one. Transfer starts are spread by a random
  delay of up to ``offer_jitter_s``, so a campaign does not hit every bus at the same instant.
- **Resumable.** Jobs are kept in a small JSON file (``<storage>/ota-jobs.json``, written
  atomically with fsync) on every phase change and with each progress report, so a gateway
  restart picks each job up where it was: a transfer starts again and the transfer function
  resumes from the offset the node reports; a committed image is watched for its boot.
- **Nothing slow on the event loop.** The loop also runs fire polling, so every call that
  waits on the card or hashes a bundle (job file saves, cache reads that verify again, cache
  writes, the image packer) runs in a worker thread. Job saves are written by one saver task
  from a snapshot taken on the loop, the latest state winning, so a slow SD card delays only
  the file, never a poll.
- **Durations on the monotonic clock.** ``device_timeout_s``, ``boot_timeout_s`` and the trial
  period are measured with ``time.monotonic`` (:func:`boot_deadline` is the pure rule), so an
  NTP step of the wall clock (a Pi without a real-time clock boots in 1970) neither fails a
  delivery nor stretches one. The wall clock is only for timestamps (``committed_at``,
  ``updated``). After a gateway restart a committed job gets a whole ``boot_timeout_s`` again.
- **One job per device, of one campaign.** A ``start`` of the job's own campaign and bundle
  re-reports it (in flight or confirmed); a ``start`` of another campaign replaces an ended job
  and is refused (``busy: ...``) while one runs. A node without the OTA window (Modbus
  exception 02 to the offer) fails at once as ``unsupported``.
- **Trust follows the fleet's rotation.** A release may carry a new key set (signed by a key
  the gateway trusts). Once a device has *confirmed* that release the gateway adopts the key
  set as a device does (``ReleaseVerifier.adopt_keys``: newer version only, revocations kept,
  its floor unchanged), persists it to ``<storage>/ota-trust.json`` atomically and verifies
  every later bundle with it; a release signed by a revoked key is refused from then on.
- **After the commit** the node reboots into the new image as a trial; what each poll decodes
  is fed to :func:`after_commit` (pure, table-tested): ``trial`` when the node runs the release
  with its trial bit, ``failed``/``rolled_back`` when it comes back on the old image with status
  bit 7, ``failed``/``device_refused`` when it booted without taking it; ``confirmed`` comes
  from :mod:`gateway.trial`'s confirm (beside the ``trial_confirmed`` event); ``failed``/
  ``timeout`` when none of this happens within ``boot_timeout_s`` (plus the trial period).
- ``op: cancel`` stops a job before its commit and tells the node to abort the part it holds
  (``ota_control`` = abort); a committed image cannot be taken back: the node's own trial and
  rollback decide.

The transfer itself (offer, chunked writes with CRC, commit, and the node's own verification
at its reboot, through the OTA register window) is :func:`gateway.ota_transfer.send_image` on
the stream :func:`gateway.ota_transfer.image_from_release` packs; both can be passed in
(``transfer``, ``packer``). ``committed`` is reported when it returns: the node holds the whole
image and has verified it. Its errors map to phases: ``OtaRefused`` is ``failed``/
``device_refused`` (with the node's ``code``); silence, a lost port, ``OtaFailed`` and ``OtaBusy``
(a node still on an unconfirmed trial) are tried again from the node's offset until
``device_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from contracts.durable import write_json_atomic
from contracts.mqtt import OTA_FINAL, OtaCommand, device_topic, rfc3339
from contracts.release import (
    REASON_SLUGS,
    KeySet,
    Manifest,
    ReleaseError,
    ReleaseVerifier,
    Version,
    parse_version,
)
from gateway.bus import BadReply, ModbusError, NoResponse, PortLost
from gateway.config import OtaSection
from gateway.decode import DeviceDecoder, now
from gateway.ota_bundle import (
    BundleCache,
    BundleError,
    download,
    load_trust,
    read_bundle,
    verify_bundle,
)
from gateway.ota_transfer import (
    OtaBusy,
    OtaFailed,
    OtaRefused,
    OtaUnsupported,
    image_from_release,
    send_image,
)
from gateway.outbox import Message
from gateway.poller import BusPoller
from hardware.regmap import load_maps

__all__ = ["BusLanes", "JobFile", "NodeView", "OtaJob", "OtaManager", "YieldingBus", "after_commit",
           "boot_deadline"]

log = logging.getLogger(__name__)

BUS_ERRORS = (NoResponse, ModbusError, BadReply, PortLost)
#: Phases before the image is committed on the node: a cancel still stops them.
BEFORE_COMMIT = frozenset({"accepted", "downloading", "verified", "queued", "transferring"})
RETRY_TRANSFER_S = 2.0  # a node that stopped answering mid-transfer is tried again this often
WATCH_STEP_S = 1.0  # a committed delivery's deadline is looked at this often

Progress = Callable[[int, int], None]


class Transfer(Protocol):
    def __call__(self, bus: Any, address: int, stream: bytes, *,
                 progress: Progress,
                 on_commit: Callable[[], None] | None = None) -> Awaitable[None]: ...


Packer = Callable[[Path], bytes]
Sink = Callable[[list[Message]], None]


# -- pure: what a poll after the commit says ------------------------------------------------
@dataclass(frozen=True)
class NodeView:
    """What one poll decoded about a node, as far as a delivery cares."""

    firmware: Version
    trial: bool
    rolled_back: bool
    boot_count: int


def after_commit(phase: str, release: Version, boot_at_commit: int | None,
                 view: NodeView) -> tuple[str, str] | None:
    """The phase a poll moves a committed delivery to, with its reason; None: no change.

    ``boot_at_commit`` is the node's boot counter when the image was committed (None when not
    known): a different one means the node has rebooted since."""
    rebooted = boot_at_commit is not None and view.boot_count != boot_at_commit
    on_release = view.firmware == release
    if phase == "committed":
        if view.rolled_back and (rebooted or not on_release):
            return "failed", "rolled_back"
        if on_release and view.trial:
            return "trial", ""
        if on_release and rebooted:  # confirmed before we saw the trial (by hand, or racing)
            return "confirmed", ""
        if rebooted and not on_release:
            return "failed", "device_refused"
        return None
    if phase == "trial":
        if view.rolled_back or not on_release:
            return "failed", "rolled_back"
        return None
    return None


def boot_deadline(phase: str, committed: float, phase_since: float, *, boot_timeout_s: float,
                  trial_after_s: float) -> float | None:
    """When a committed delivery has waited too long, on the clock ``committed`` and
    ``phase_since`` (when the job entered ``phase``) are read from (the monotonic one); None:
    nothing to wait for (a trial confirmed by hand). Committed: ``boot_timeout_s`` after the
    commit. Trial: the trial period and ``boot_timeout_s`` after the trial began, at the
    earliest the committed deadline."""
    deadline = committed + boot_timeout_s
    if phase == "trial":
        if trial_after_s <= 0:
            return None
        deadline = max(deadline, phase_since + trial_after_s + boot_timeout_s)
    return deadline


# -- jobs and their file --------------------------------------------------------------------
@dataclass
class OtaJob:
    """One delivery to one device; what is persisted to resume it."""

    device: str
    campaign: str
    command: str
    sha256: str
    size: int
    release: str = ""
    url: str | None = None
    token: str | None = None  # kept only until the bundle is verified and cached
    phase: str = "accepted"
    offset: int = 0
    image_size: int = 0
    reason: str = ""
    boot_at_commit: int | None = None
    committed_at: float | None = None  # wall clock, a timestamp only (durations: monotonic)
    updated: float = field(default_factory=time.time)  # wall clock, a timestamp only
    #: The key set the verified release carries (its JSON form), adopted once confirmed.
    trust: dict[str, Any] | None = None

    @property
    def final(self) -> bool:
        return self.phase in OTA_FINAL

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OtaJob:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class JobFile:
    """The jobs, one per device, in one JSON file replaced atomically
    (:func:`contracts.durable.write_atomic`), so a power cut leaves the old file or the new one.
    :meth:`save` blocks on the disk: the manager calls it in a thread, with copies."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, OtaJob]:
        try:
            data = json.loads(self.path.read_text())
            return {d: OtaJob.from_json(j) for d, j in data["jobs"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("%s is unreadable (%s); OTA jobs in flight are not resumed", self.path, exc)
            return {}

    def save(self, jobs: Mapping[str, OtaJob]) -> None:
        # mode 0600: a job may hold a download token until its bundle is cached
        write_json_atomic(self.path, {"v": 1, "jobs": {d: asdict(j) for d, j in jobs.items()}})


# -- the bus ---------------------------------------------------------------------------------
class YieldingBus:
    """The bus as a transfer sees it: each transaction goes through the poller's background
    lane, so polls that are due go first and the transfer never holds the bus between them."""

    def __init__(self, poller: BusPoller) -> None:
        self.poller = poller

    @property
    def timeout(self) -> float:
        return self.poller.bus.timeout

    async def read_input(self, device: int, address: int, count: int,
                         timeout: float | None = None) -> list[int]:
        result: list[int] = await self.poller.background(
            lambda bus: bus.read_input(device, address, count, timeout))
        return result

    async def read_holding(self, device: int, address: int, count: int,
                           timeout: float | None = None) -> list[int]:
        result: list[int] = await self.poller.background(
            lambda bus: bus.read_holding(device, address, count, timeout))
        return result

    async def write_register(self, device: int, address: int, value: int,
                             timeout: float | None = None) -> None:
        await self.poller.background(lambda bus: bus.write_register(device, address, value,
                                                                    timeout))

    async def write_registers(self, device: int, address: int, values: list[int],
                              timeout: float | None = None) -> None:
        await self.poller.background(lambda bus: bus.write_registers(device, address, values,
                                                                     timeout))


class BusLanes:
    """One transfer per bus at a time, first come first served."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, bus: str) -> asyncio.Lock:
        return self._locks.setdefault(bus, asyncio.Lock())

    def busy(self, bus: str) -> bool:
        return self.lock(bus).locked()


# -- the manager ------------------------------------------------------------------------------
def _default_transfer() -> tuple[Transfer, Packer]:
    return send_image, image_from_release


class OtaManager:
    """Every OTA job of one gateway. ``command`` takes the fleet's commands; ``observe`` and
    ``confirmed`` are fed by the service's poll hook and trial confirm; ``run`` resumes the
    persisted jobs and stops them (unchanged on disk) when the gateway stops."""

    def __init__(self, gateway_id: str, config: OtaSection, *, cache_dir: Path,
                 state_path: Path, pollers: Mapping[str, BusPoller],
                 device_bus: Mapping[str, BusPoller], publish: Sink,
                 trial_after_s: float, transfer: Transfer | None = None,
                 packer: Packer | None = None, rng: random.Random | None = None,
                 trust_path: Path | None = None) -> None:
        self.gateway_id = gateway_id
        self.config = config
        #: The key set adopted from confirmed releases (module docstring), beside the jobs.
        self.trust_path = trust_path or state_path.with_name("ota-trust.json")
        self.verifier: ReleaseVerifier = _adopted(load_trust(config.trust), self.trust_path)
        self.cache = BundleCache(cache_dir, int(config.cache_max_mb * 1024 * 1024))
        self.file = JobFile(state_path)
        self.pollers = pollers
        self.device_bus = device_bus
        self.publish = publish
        self.trial_after_s = trial_after_s
        self._transfer, self._packer = transfer, packer
        self.rng = rng or random.Random()
        self.lanes = BusLanes()
        self.jobs: dict[str, OtaJob] = self.file.load()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: One fetch per bundle at a time: a campaign's second node waits and finds it cached.
        self._fetching: dict[str, asyncio.Lock] = {}
        self._aborts: set[asyncio.Task[None]] = set()
        #: Committed jobs whose transfer still waits for the node's verification: their
        #: polls are not judged yet (the verify reboot is not the trial's).
        self._verifying: set[str] = set()
        #: Monotonic times per device: the commit, and when the job entered its phase.
        self._committed_mono: dict[str, float] = {}
        self._since: dict[str, float] = {}
        #: The one saver of the job file (and of adopted trust), and whether jobs changed
        #: since its last snapshot.
        self._saver: asyncio.Task[None] | None = None
        self._dirty = False
        self._trust_writes: set[asyncio.Task[None]] = set()
        self._running = False
        self._trial_bit = _status_bit("trial")
        self._rolled_back_bit = _status_bit("rolled_back")

    # -- commands -------------------------------------------------------------------------
    def command(self, command_id: str, device: str, body: Mapping[str, Any]) -> None:
        """Take an ``ota`` command or raise ValueError saying why not (the ack's error)."""
        try:
            cmd = OtaCommand.model_validate(dict(body))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ValueError(f"ota command: {where}: {first['msg']}") from None
        if device not in self.device_bus:
            raise ValueError(f"unknown device {device!r} on gateway {self.gateway_id}")
        job = self.jobs.get(device)
        if cmd.op == "cancel":
            self._cancel(device, cmd.campaign, job)
            return
        if cmd.url is None or cmd.sha256 is None or cmd.size is None:
            raise ValueError('ota start needs "url", "sha256" and "size"')
        same = job is not None and (job.campaign, job.sha256) == (cmd.campaign, cmd.sha256)
        if job is not None and same and (not job.final or job.phase == "confirmed"):
            self._emit(job)  # this campaign's job in flight or done: re-report, never restart
            return
        if job is not None and not job.final:
            raise ValueError(f"busy: {device} is receiving campaign {job.campaign} (release "
                             f"{job.release or '?'}, {job.phase}); cancel it first")
        # a new job: this campaign's after it failed or was cancelled, or another campaign's
        # after the old one ended (it replaces the old job; the old campaign's end stands)
        release = cmd.release or ""
        job = OtaJob(device, cmd.campaign, cmd.id, cmd.sha256, cmd.size, release, cmd.url,
                     cmd.token)
        self.jobs[device] = job
        self._set(job, "accepted")
        self._start(job)

    def _cancel(self, device: str, campaign: str, job: OtaJob | None) -> None:
        if job is None or job.final or job.campaign != campaign:
            return  # nothing of that campaign runs: a no-op
        if job.phase not in BEFORE_COMMIT:
            raise ValueError(f"{device} has already committed release {job.release} of campaign "
                             f"{campaign}; its trial decides now (a commit cannot be taken back)")
        task = self._tasks.pop(device, None)
        if task is not None:
            task.cancel()
        if job.phase == "transferring" and self._running:
            abort = asyncio.get_running_loop().create_task(self._abort(device))
            self._aborts.add(abort)
            abort.add_done_callback(self._aborts.discard)
        self._set(job, "cancelled")
        log.warning("%s: OTA of campaign %s cancelled", device, campaign)

    async def _abort(self, device: str) -> None:
        """Tell the node to forget the part it holds (its ``ota`` status bit clears)."""
        window = load_maps().ota
        at, value = window.holding_register("ota_control").address, window.controls["abort"]
        poller = self.device_bus[device]
        address = poller.devices[device].address
        try:
            await poller.submit(lambda bus: bus.write_register(address, at, value))
        except BUS_ERRORS as exc:  # it keeps the part; the next offer of another image resets
            log.warning("%s: could not abort the cancelled transfer on the node: %s", device,
                        exc)

    # -- running --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Resume the persisted jobs, then wait for stop; stopping leaves them on disk."""
        self._running = True
        order = ("transferring", "queued", "verified", "downloading", "accepted", "committed",
                 "trial")
        for job in sorted((j for j in self.jobs.values() if not j.final),
                          key=lambda j: order.index(j.phase) if j.phase in order else 99):
            if job.device not in self.device_bus:
                self._set(job, "failed", "unknown_device")
                continue
            log.info("%s: resuming OTA of campaign %s at %s", job.device, job.campaign,
                     job.phase)
            self._start(job, resumed=True)
        try:
            await stop.wait()
        finally:
            self._running = False
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._tasks.clear()
            await self.flush()

    async def flush(self) -> None:
        """Wait until the job file (and an adopted trust) on disk hold the latest state."""
        while (self._saver is not None and not self._saver.done()) or self._trust_writes:
            if self._saver is not None and not self._saver.done():
                await asyncio.shield(self._saver)
            for task in list(self._trust_writes):
                await asyncio.shield(task)

    def _start(self, job: OtaJob, resumed: bool = False) -> None:
        if not self._running:
            return  # run() starts it
        old = self._tasks.pop(job.device, None)
        if old is not None:
            old.cancel()
        task = asyncio.get_running_loop().create_task(self._deliver(job, resumed),
                                                      name=f"ota-{job.device}")
        self._tasks[job.device] = task
        device = job.device
        task.add_done_callback(lambda t: self._done(device, t))

    def _done(self, device: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(device) is task:
            del self._tasks[device]
        if not task.cancelled() and task.exception() is not None:
            job = self.jobs.get(device)
            log.error("%s: OTA job crashed: %r", device, task.exception())
            if job is not None and not job.final:
                self._set(job, "failed", "gateway_error")

    async def _deliver(self, job: OtaJob, resumed: bool) -> None:
        poller = self.device_bus[job.device]
        dev = poller.devices[job.device]
        device_class = dev.decoder.info.cls
        fetched: Path | None = None
        if job.phase in ("accepted", "downloading"):
            fetched = await self._fetch(job, device_class)
            if fetched is None:
                return
        if job.phase in ("verified", "queued", "transferring"):
            # just fetched (and verified): straight on to the lane, so jobs take it in the
            # order their bundles were ready; resumed: verified again from the cache first
            release_dir = fetched or await self._cached(job, device_class)
            if release_dir is None:
                return
            if not (resumed and job.phase == "transferring") and self.config.offer_jitter_s:
                await asyncio.sleep(self.rng.uniform(0, self.config.offer_jitter_s))
            lane = self.lanes.lock(poller.name)
            if lane.locked():
                self._set(job, "queued")
            async with lane:
                if not await self._send(job, poller, dev.address, release_dir):
                    return
        if job.phase in ("committed", "trial"):
            await self._watch(job)

    async def _fetch(self, job: OtaJob, device_class: str) -> Path | None:
        """Cache hit or download + verify + cache: the release directory; None when the job
        failed."""
        async with self._fetching.setdefault(job.sha256, asyncio.Lock()):
            return await self._fetch_once(job, device_class)

    async def _fetch_once(self, job: OtaJob, device_class: str) -> Path | None:
        # The cache, the tar reader and the verification hash every file and write to the card:
        # in a thread, so fire polling on this loop never waits for them.
        verifier = self.verifier
        try:
            cached = await asyncio.to_thread(self.cache.get, job.sha256, verifier,
                                             device_class=device_class)
            if cached is None:
                if job.url is None:
                    raise BundleError("download", "no URL to fetch the bundle from")
                self._set(job, "downloading")
                data = await download(job.url, job.token, job.size, job.sha256,
                                      timeout_s=self.config.download_timeout_s,
                                      retries=self.config.download_retries)
                entry, manifest = await asyncio.to_thread(
                    self._verify_and_cache, job, data, verifier, device_class, self._in_use())
            else:
                entry, manifest = cached
                self._check_release(job, manifest.version)
                log.info("%s: bundle %s is cached and verifies: not downloaded again",
                         job.device, job.sha256[:16])
            job.trust = None if manifest.trust is None else manifest.trust.to_json()
        except BundleError as exc:
            log.error("%s: OTA bundle of campaign %s refused: %s", job.device, job.campaign, exc)
            job.token = None
            self._set(job, "failed", exc.reason, detail=exc.detail)
            return None
        except OSError as exc:
            log.error("%s: OTA bundle cache: %s", job.device, exc)
            job.token = None
            self._set(job, "failed", "cache", detail=str(exc))
            return None
        job.token = None  # verified and cached: the download token is not needed any more
        self._set(job, "verified")
        return entry

    def _verify_and_cache(self, job: OtaJob, data: bytes, verifier: ReleaseVerifier,
                          device_class: str, keep: set[str]) -> tuple[Path, Manifest]:
        """Read, verify and cache a downloaded bundle (blocking: runs in a thread)."""
        files = read_bundle(data)
        manifest = verify_bundle(files, verifier, device_class=device_class)
        self._check_release(job, manifest.version)
        return self.cache.put(job.sha256, files, keep=keep), manifest

    def _check_release(self, job: OtaJob, version: Version) -> None:
        text = ".".join(str(p) for p in version)
        if job.release and job.release != text:
            raise BundleError("malformed", f"the command says release {job.release}, the "
                              f"signed manifest says {text}")
        job.release = text

    async def _cached(self, job: OtaJob, device_class: str) -> Path | None:
        try:
            found = await asyncio.to_thread(self.cache.get, job.sha256, self.verifier,
                                            device_class=device_class)
            if found is not None:
                self._check_release(job, found[1].version)
        except OSError as exc:
            self._set(job, "failed", "cache", detail=str(exc))
            return None
        except BundleError as exc:
            self._set(job, "failed", exc.reason, detail=exc.detail)
            return None
        if found is None:  # evicted or damaged since: the fleet sends the command again
            self._set(job, "failed", "cache", detail="the verified bundle is no longer cached")
            return None
        return found[0]

    def _in_use(self) -> set[str]:
        return {j.sha256 for j in self.jobs.values() if not j.final}

    async def _send(self, job: OtaJob, poller: BusPoller, address: int,
                    release_dir: Path) -> bool:
        """The transfer, tried again while the node is silent; False when the job failed."""
        transfer, packer = self._transfer, self._packer
        if transfer is None or packer is None:
            default_transfer, default_packer = _default_transfer()
            transfer, packer = transfer or default_transfer, packer or default_packer
        try:
            stream = await asyncio.to_thread(packer, release_dir)
        except OSError as exc:
            self._set(job, "failed", "cache", detail=str(exc))
            return False
        job.image_size = len(stream)
        self._set(job, "transferring")
        last_report = time.monotonic()
        silent_since: float | None = None

        def progress(offset: int, size: int) -> None:
            nonlocal last_report, silent_since
            if offset > job.offset:
                silent_since = None  # progress: the node is there
            job.offset, job.image_size = offset, size
            t = time.monotonic()
            if t - last_report >= self.config.progress_interval_s:
                last_report = t
                self._set(job, job.phase)  # transferring, or committed on a resumed verify

        def on_commit() -> None:
            # The commit write goes out now: the node may boot the image whatever we do, so
            # the job is committed from here and a cancel is refused (docs/gateway.md).
            self._verifying.add(job.device)
            if job.phase != "committed":
                job.boot_at_commit = None  # the verify reboot is to come: no counter to judge
                job.committed_at = time.time()
                self._committed_mono[job.device] = time.monotonic()
                self._set(job, "committed")

        timing = poller.devices[job.device].timing
        while True:
            try:
                if not poller.link_up or timing.offline:  # wait for the bus and the node
                    raise PortLost(poller.bus.describe(), f"bus {poller.name} is down or "
                                   f"{job.device} is offline")
                try:
                    await transfer(YieldingBus(poller), address, stream, progress=progress,
                                   on_commit=on_commit)
                finally:
                    self._verifying.discard(job.device)
                break
            except OtaRefused as exc:  # the node's own check: never tried again
                log.error("%s: the node refused the image: %s", job.device, exc)
                self._set(job, "failed", "device_refused", detail=str(exc), code=exc.code,
                          refusal=REASON_SLUGS.get(exc.code, str(exc.code)))
                return False
            except OtaUnsupported as exc:  # no OTA window: no retry can change that
                log.error("%s: %s", job.device, exc)
                self._set(job, "failed", "unsupported", detail=str(exc))
                return False
            except (*BUS_ERRORS, OtaBusy, OtaFailed) as exc:
                # Silence, a lost port, a node on an unconfirmed trial (busy until its trial
                # ends): try again from the node's offset until device_timeout_s.
                t = time.monotonic()
                silent_since = silent_since or t
                if t - silent_since >= self.config.device_timeout_s:
                    reason = "device_busy" if isinstance(exc, OtaBusy) else "timeout"
                    self._set(job, "failed", reason, detail=str(exc))
                    return False
                if poller.link_up and not timing.offline:
                    log.warning("%s: OTA transfer interrupted (%s); resuming from the node's "
                                "offset", job.device, exc)
                await asyncio.sleep(RETRY_TRANSFER_S if poller.link_up else 0.2)
        job.offset = job.image_size
        dev = poller.devices[job.device]
        boot = dev.decoder.values.get("boot_count")
        job.boot_at_commit = None if boot is None else int(boot)
        job.committed_at = time.time()
        self._committed_mono[job.device] = time.monotonic()
        if job.phase == "committed":  # reported once, at the commit write (on_commit)
            self._save()
        else:
            self._set(job, "committed")
        poller.repoll(job.device)
        return True

    async def _watch(self, job: OtaJob) -> None:
        """Wait for the node's boot on the new image (observe() moves the phase); time out."""
        # resumed after a restart: the monotonic clock of the last run is gone, so the node
        # gets a whole boot_timeout_s from now
        committed = self._committed_mono.setdefault(job.device, time.monotonic())
        while not job.final:
            deadline = boot_deadline(job.phase, committed,
                                     self._since.get(job.device, committed),
                                     boot_timeout_s=self.config.boot_timeout_s,
                                     trial_after_s=self.trial_after_s)
            if deadline is None:
                return  # confirmed by hand: nothing to wait for here
            left = deadline - time.monotonic()
            if left <= 0:
                self._set(job, "failed", "timeout",
                          detail=f"not {'confirmed' if job.phase == 'trial' else 'back'} "
                                 f"{self.config.boot_timeout_s:g} s after the commit")
                return
            await asyncio.sleep(min(left, WATCH_STEP_S))

    def health(self) -> dict[str, Any]:
        """The deliveries not yet ended, for the gateway's status (``health.ota``)."""
        return {device: {"campaign": job.campaign, "release": job.release,
                         "phase": job.phase, "offset": job.offset, "size": job.image_size}
                for device, job in sorted(self.jobs.items()) if not job.final}

    # -- fed by the service ---------------------------------------------------------------
    def observe(self, decoder: DeviceDecoder) -> None:
        """A poll of a node decoded: move a committed delivery on (pure rule: after_commit)."""
        job = self.jobs.get(decoder.info.id)
        if job is None or job.phase not in ("committed", "trial") or not job.release:
            return
        if job.device in self._verifying:
            return  # send_image still waits for the verification result
        values = decoder.values
        if not decoder.online or "status" not in values or "fw_major" not in values:
            return
        status = int(values["status"])
        view = NodeView((int(values["fw_major"]), int(values["fw_minor"]),
                         int(values["fw_patch"])),
                        trial=bool(status >> self._trial_bit & 1),
                        rolled_back=bool(status >> self._rolled_back_bit & 1),
                        boot_count=int(values.get("boot_count", 0)))
        change = after_commit(job.phase, parse_version(job.release), job.boot_at_commit, view)
        if change is None:
            return
        phase, reason = change
        firmware = ".".join(str(p) for p in view.firmware)
        log.warning("%s: OTA of %s: %s%s (node runs %s)", job.device, job.release, phase,
                    f" ({reason})" if reason else "", firmware)
        self._set(job, phase, reason, detail=f"the node runs {firmware}" if reason else "")

    def confirmed(self, device: str, firmware: str) -> None:
        """gateway.trial confirmed the node's trial image (the trial_confirmed event)."""
        job = self.jobs.get(device)
        if job is None or job.final or job.release != firmware:
            return
        if job.phase == "committed":  # the trial poll and the confirm raced
            self._set(job, "trial")
        self._set(job, "confirmed")

    # -- phases and events ----------------------------------------------------------------
    def _set(self, job: OtaJob, phase: str, reason: str = "", **extra: Any) -> None:
        job.phase, job.reason, job.updated = phase, reason, time.time()
        self._since[job.device] = time.monotonic()
        if phase == "confirmed":
            self._adopt_trust(job)
        self._save()
        self._emit(job, **extra)

    def _save(self) -> None:
        """Have the job file written with the jobs as they are now, off the event loop (one
        saver; changes made while it writes are written right after). Without a running
        loop (before the gateway starts), written at once."""
        self._dirty = True
        if self._saver is not None and not self._saver.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._dirty = False
            self._write_jobs(self._snapshot())
            return
        self._saver = loop.create_task(self._save_loop(), name="ota-jobs-save")

    def _snapshot(self) -> dict[str, OtaJob]:
        return {device: dataclasses.replace(job) for device, job in self.jobs.items()}

    async def _save_loop(self) -> None:
        while self._dirty:
            self._dirty = False
            await asyncio.to_thread(self._write_jobs, self._snapshot())

    def _write_jobs(self, jobs: Mapping[str, OtaJob]) -> None:
        try:
            self.file.save(jobs)
        except OSError as exc:  # the delivery goes on; only a restart would lose its place
            log.error("cannot save OTA jobs to %s: %s", self.file.path, exc)

    # -- trust ----------------------------------------------------------------------------
    def _adopt_trust(self, job: OtaJob) -> None:
        """A device confirmed a release that carries a key set: the gateway takes it too."""
        if job.trust is None:
            return
        try:
            carried = KeySet.from_json(job.trust)
        except ReleaseError as exc:  # it was verified with the release: a damaged job file
            log.error("%s: the key set of release %s is unreadable (%s); not adopted",
                      job.device, job.release, exc)
            return
        before = self.verifier
        after = before.adopt_keys(carried)
        if after.keys == before.keys:
            return  # not newer than what the gateway holds
        self.verifier = after
        log.info("OTA trust: adopted key set v%d from release %s confirmed on %s: keys %s, "
                 "revoked %s (was v%d)", after.keys.version, job.release, job.device,
                 ", ".join(sorted(after.keys.keys)) or "-",
                 ", ".join(sorted(after.keys.revoked)) or "-", before.keys.version)
        body = {"keys": after.keys.to_json(), "floor": list(after.floor)}
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write_trust(body)
            return
        previous = list(self._trust_writes)

        async def write() -> None:
            for task in previous:  # in order: the newest key set is written last
                with contextlib.suppress(Exception):
                    await task
            await asyncio.to_thread(self._write_trust, body)

        task = loop.create_task(write(), name="ota-trust-save")
        self._trust_writes.add(task)
        task.add_done_callback(self._trust_writes.discard)

    def _write_trust(self, body: dict[str, Any]) -> None:
        try:
            write_json_atomic(self.trust_path, body)
        except OSError as exc:  # adopted in memory; a restart would go back to the old set
            log.error("cannot save the adopted OTA trust to %s: %s", self.trust_path, exc)

    def _emit(self, job: OtaJob, **extra: Any) -> None:
        body: dict[str, Any] = {
            "v": 1, "device": job.device, "ts": rfc3339(now()), "event": "ota",
            "campaign": job.campaign, "release": job.release or "?", "phase": job.phase,
            "offset": job.offset, "size": job.image_size, "command": job.command}
        if job.reason:
            body["reason"] = job.reason
        body.update({k: v for k, v in extra.items() if v not in (None, "")})
        self.publish([Message(device_topic(self.gateway_id, job.device, "event"), body,
                              "event", device=job.device)])


def _adopted(configured: ReleaseVerifier, path: Path) -> ReleaseVerifier:
    """The configured trust, with the key set adopted earlier (``path``) when that is newer."""
    try:
        data = json.loads(path.read_text())
        keys = KeySet.from_json(data["keys"])
    except FileNotFoundError:
        return configured
    except (OSError, ValueError, KeyError, TypeError, ReleaseError) as exc:
        log.error("%s is unreadable (%s); the configured release trust is used", path, exc)
        return configured
    verifier = configured.adopt_keys(keys)
    if verifier.keys != configured.keys:
        log.info("OTA trust: key set v%d adopted earlier (%s): keys %s, revoked %s",
                 verifier.keys.version, path, ", ".join(sorted(verifier.keys.keys)) or "-",
                 ", ".join(sorted(verifier.keys.revoked)) or "-")
    return verifier


def _status_bit(name: str) -> int:
    return next(b.bit for b in load_maps().status_bits if b.name == name)

