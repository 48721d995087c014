"""Moving one image stream into one node through its OTA register window (the master's side).

The call the gateway's OTA orchestration makes, once per node, on the node's bus::

    async def send_image(bus: ModbusBus, address: int, stream: bytes, *,
                         progress: Callable[[int, int], None],
                         chunk_bytes: int | None = None, timeout: float | None = None,
                         offer_timeout: float = 3.0, max_failures: int = 10,
                         wait_verified: bool = True, verify_timeout_s: float = 60.0,
                         poll_interval_s: float = 0.25) -> None

``stream`` is a release packed by :func:`hardware.ota_image.pack` (``pack(manifest.json bytes,
manifest.sig bytes, {"app/...": bytes})``; :func:`image_from_release` reads a release
directory). ``progress(bytes_done, bytes_total)`` is called at the resume point and after every
chunk the node acknowledged. It returns once the node has verified the image itself and staged
it (it then boots it as a trial, status bit 3; confirming it stays the gateway's business), or
with ``wait_verified=False`` once the commit is acknowledged. It raises:

- :class:`OtaRefused` (``code``, ``reason``: contracts.release REASONS) when the node refused the
  image: a malformed stream while receiving, or its own check at boot (bad hash, bad signature,
  unknown or revoked key, downgrade, wrong class or board). The node keeps its old image.
- :class:`OtaBusy` when the node runs an unconfirmed trial image (Modbus exception 06 to the
  offer): confirm it, or let it roll back, then offer again.
- :class:`OtaUnsupported` when the node has no OTA window: it answers the offer with Modbus
  exception 02 (illegal data address) or 01 (illegal function), as a firmware from before the
  window does. Offering again cannot help: the caller fails the delivery at once.
- :class:`OtaFailed` when the transfer cannot go on: ``max_failures`` transactions in a row
  without progress (its message names the last cause: silence, a garbled reply, an exception
  code), an offer the node rejects with another exception, or no verification result within
  ``verify_timeout_s``.
- :class:`gateway.bus.PortLost` as it comes: the link is the poller's to re-open.

Resume, either side restarted: the offer is always written first; the node answers the same
offer (same stream SHA-256, size, chunk size, version) by keeping its progress, and the master
then reads ``ota_next_chunk`` and goes on from there (a node silent right after an offer, e.g.
rebooting, is waited for up to ``verify_timeout_s`` rather than counted as failures). A chunk
without an answer is sent again (the node takes a repeat of its last chunk as a no-op); a Modbus
exception to a chunk or a commit makes the master read the node's state and go on from what it
says.

The logic is the sans-IO :class:`Transfer` (table-tested, no bus, no clock: the driver feeds it
the time); :func:`send_image` only does the I/O. It takes the bus' lock per transaction, so the
poller's reads interleave with the chunks on the same bus.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contracts.release import REASONS
from gateway.bus import BadReply, ModbusBus, ModbusError, NoResponse
from hardware.ota_image import Offer, OtaStatus, chunk_words, pack
from hardware.regmap import load_maps

__all__ = [
    "OtaBusy",
    "OtaError",
    "OtaFailed",
    "OtaRefused",
    "OtaUnsupported",
    "Transfer",
    "image_from_release",
    "send_image",
]

log = logging.getLogger(__name__)

BUSY = 6  # Modbus exception "slave device busy": a trial image runs
#: Modbus exceptions to the offer from a node without the window: illegal function, address.
NO_WINDOW = frozenset({1, 2})
#: When the next chunk is built, after a chunk's write began: past the silent interval and the
#: send (~2 ms at 115200 baud), well inside the chunk's own wire time (24 ms at 115200).
_PREPARE_AFTER_S = 0.004


# -- errors -----------------------------------------------------------------------------------
class OtaError(Exception):
    """A transfer that did not end with the image staged on the node."""

    def __init__(self, address: int, detail: str):
        super().__init__(f"node {address}: {detail}")
        self.address = address
        self.detail = detail


class OtaRefused(OtaError):
    """The node refused the image; ``code`` is the contracts.release REASONS number."""

    def __init__(self, address: int, code: int):
        self.code = code
        self.reason = REASONS.get(code, f"reason {code}")
        super().__init__(address, f"refused the image: {self.reason}")


class OtaBusy(OtaError):
    """The node runs an unconfirmed trial image and takes no offer until it is confirmed."""


class OtaUnsupported(OtaError):
    """The node has no OTA window (its firmware predates it): no offer will ever be taken."""


class OtaFailed(OtaError):
    """Too many failures without progress, a rejected offer, or no verification result."""


# -- events (what a transaction gave) and actions (what to do next) ---------------------------
@dataclass(frozen=True)
class Answered:
    """A write was acknowledged."""


@dataclass(frozen=True)
class Status:
    status: OtaStatus


@dataclass(frozen=True)
class NoAnswer:
    cause: str


@dataclass(frozen=True)
class Exception_:
    code: int


Event = Answered | Status | NoAnswer | Exception_


@dataclass(frozen=True)
class WriteOffer:
    words: list[int]


@dataclass(frozen=True)
class ReadStatus:
    wait: bool  # pause before reading (the node is rebooting to verify)


@dataclass(frozen=True)
class WriteChunk:
    index: int
    words: list[int]


@dataclass(frozen=True)
class WriteCommit:
    pass


@dataclass(frozen=True)
class Done:
    pass


Action = WriteOffer | ReadStatus | WriteChunk | WriteCommit | Done


class Transfer:
    """The master's side of one transfer, without I/O.

    Phases: ``offer`` → ``sync`` (read where the node is) → ``send`` (chunk by chunk) →
    ``commit`` → ``outcome`` (poll the node's state through its verify reboot) → ``done``.
    Call :meth:`action` for what to do, then :meth:`feed` with what happened and the time.
    Errors are raised from :meth:`feed`.
    """

    def __init__(self, address: int, stream: bytes, offer: Offer, *, max_failures: int = 10,
                 wait_verified: bool = True, verify_timeout_s: float = 60.0):
        self.address = address
        self.stream = stream
        self.offer = offer
        self.max_failures = max_failures
        self.wait_verified = wait_verified
        self.verify_timeout_s = verify_timeout_s
        self.phase = "offer"
        self.next_chunk = 0
        self.failures = 0
        self.last_cause = ""
        self._deadline: float | None = None
        self._silent = False  # the last status read went unanswered (the node reboots)
        self._ahead: tuple[int, list[int]] | None = None  # the next chunk's words, built ahead

    @property
    def done_bytes(self) -> int:
        return min(self.next_chunk * self.offer.chunk_bytes, self.offer.size)

    def action(self) -> Action:
        if self.phase == "offer":
            return WriteOffer(self.offer.words())
        if self.phase == "sync":
            return ReadStatus(wait=self._silent)
        if self.phase == "send":
            ahead, self._ahead = self._ahead, None
            if ahead is not None and ahead[0] == self.next_chunk:
                return WriteChunk(self.next_chunk, ahead[1])
            return WriteChunk(self.next_chunk,
                              chunk_words(self.stream, self.next_chunk, self.offer.chunk_bytes))
        if self.phase == "commit":
            return WriteCommit()
        if self.phase == "outcome":
            return ReadStatus(wait=True)
        return Done()

    def prepare_next(self) -> None:
        """Build the words of the chunk after the current one now, while the current one is on
        the wire (the driver calls this then), so the next :meth:`action` need not: its CRC is
        Python, ~0.1 ms, on the path from the node's answer to the next request."""
        index = self.next_chunk + 1
        if self.phase == "send" and index < self.offer.chunks:
            self._ahead = (index, chunk_words(self.stream, index, self.offer.chunk_bytes))

    # -- transitions ------------------------------------------------------------------------
    def _fail(self, cause: str) -> None:
        self.failures += 1
        self.last_cause = cause
        if self.failures >= self.max_failures:
            raise OtaFailed(self.address, f"{self.failures} failures in a row without progress "
                                          f"(last: {cause})")

    def _go_on_from(self, next_chunk: int) -> None:
        if not 0 <= next_chunk <= self.offer.chunks:
            self._fail(f"the node reports chunk {next_chunk} of {self.offer.chunks}")
            self.phase = "offer"
            return
        self.next_chunk = next_chunk
        self.phase = "commit" if next_chunk == self.offer.chunks else "send"

    def feed(self, event: Event, now: float) -> None:
        phase = self.phase
        if phase == "offer":
            if isinstance(event, Answered):
                # a node that goes silent now (a reset) is waited for, not counted
                self._deadline = now + self.verify_timeout_s
                self.phase = "sync"
            elif isinstance(event, Exception_):
                if event.code == BUSY:
                    raise OtaBusy(self.address, "runs an unconfirmed trial image; confirm it "
                                                "(or let it roll back) before the next offer")
                if event.code in NO_WINDOW:
                    raise OtaUnsupported(self.address, f"has no OTA window (Modbus exception "
                                                       f"{event.code:02d} to the offer): its "
                                                       "firmware must be flashed by hand")
                raise OtaFailed(self.address, f"rejected the offer with Modbus exception "
                                              f"{event.code:02d}")
            else:
                self._fail(self._cause(event))
        elif phase == "sync":
            self._silent = isinstance(event, NoAnswer)
            if isinstance(event, Status):
                self._deadline = None
                self._on_status(event.status, now)
            elif self._silent and self._deadline is not None and now <= self._deadline:
                pass   # rebooting: wait for it
            else:
                self._fail(self._cause(event))
        elif phase == "send":
            if isinstance(event, Answered):
                self.next_chunk += 1
                self.failures = 0
                if self.next_chunk == self.offer.chunks:
                    self.phase = "commit"
            elif isinstance(event, Exception_):
                self._fail(f"chunk {self.next_chunk}: Modbus exception {event.code:02d}")
                self.phase = "sync"
            else:
                self._fail(f"chunk {self.next_chunk}: {self._cause(event)}")
        elif phase == "commit":
            if isinstance(event, Exception_):
                self._fail(f"commit: Modbus exception {event.code:02d}")
                self.phase = "sync"
                return
            if isinstance(event, Answered) and not self.wait_verified:
                self.phase = "done"
                return
            # answered, or silent (the node may have committed and be rebooting already)
            self._deadline = now + self.verify_timeout_s
            self.phase = "outcome"
        elif phase == "outcome":
            if isinstance(event, Status):
                self._on_status(event.status, now)
            elif self._deadline is not None and now > self._deadline:
                raise OtaFailed(self.address, f"no verification result within "
                                              f"{self.verify_timeout_s:g} s "
                                              f"(last: {self._cause(event)})")

    def _on_status(self, status: OtaStatus, now: float) -> None:
        state = status.state
        if state == "refused":
            raise OtaRefused(self.address, status.reason)
        if state == "staged":
            self.next_chunk = self.offer.chunks
            self.phase = "done"
        elif state == "verify_pending":
            if self._deadline is None:
                self._deadline = now + self.verify_timeout_s
            self.phase = "outcome"
        elif state == "receiving":
            if self.phase == "outcome":
                self._fail("the commit did not take")
            previous = self.next_chunk
            self._go_on_from(status.next_chunk)
            if self.next_chunk > previous:
                self.failures = 0
        else:   # idle: the node forgot the transfer (aborted, or its record was lost)
            self._fail(f"the node is {state}")
            self.phase = "offer"

    @staticmethod
    def _cause(event: Event) -> str:
        if isinstance(event, NoAnswer):
            return event.cause
        if isinstance(event, Exception_):
            return f"Modbus exception {event.code:02d}"
        return type(event).__name__


# -- the driver -------------------------------------------------------------------------------
async def send_image(bus: ModbusBus, address: int, stream: bytes, *,
                     progress: Callable[[int, int], None],
                     chunk_bytes: int | None = None, timeout: float | None = None,
                     offer_timeout: float = 3.0, max_failures: int = 10,
                     wait_verified: bool = True, verify_timeout_s: float = 60.0,
                     poll_interval_s: float = 0.25,
                     on_commit: Callable[[], None] | None = None) -> None:
    """Move ``stream`` into node ``address`` and see it verified (module docstring).

    ``on_commit`` is called right before each commit write: from then on the node may boot the
    image whatever the gateway does (an abort is no longer honoured), so the caller's job is
    committed from that point, not when the verification result comes back."""
    window = load_maps().ota
    offer_at = window.holding_register("ota_offer").address
    control_at = window.holding_register("ota_control").address
    chunk_at = window.holding_register("ota_chunk").address
    status_at = window.input_register("ota_state").address
    offer = Offer.of(stream, chunk_bytes)
    transfer = Transfer(address, stream, offer, max_failures=max_failures,
                        wait_verified=wait_verified, verify_timeout_s=verify_timeout_s)
    reported = -1
    log.info("OTA to node %d: %d bytes in %d chunks, version %s", address, offer.size,
             offer.chunks, ".".join(map(str, offer.version)))
    while True:
        action = transfer.action()
        if isinstance(action, Done):
            break
        event: Event
        try:
            if isinstance(action, WriteOffer):
                await bus.write_registers(address, offer_at, action.words,
                                          timeout=max(timeout or bus.timeout, offer_timeout))
                event = Answered()
            elif isinstance(action, WriteChunk):
                # once this chunk is on its way (t3.5 and the master's send path are over
                # by then), build the next one while the node receives and answers this one
                ahead = asyncio.get_running_loop().call_later(_PREPARE_AFTER_S,
                                                               transfer.prepare_next)
                try:
                    await bus.write_registers(address, chunk_at, action.words, timeout=timeout)
                finally:
                    ahead.cancel()
                event = Answered()
            elif isinstance(action, WriteCommit):
                if on_commit is not None:
                    on_commit()
                await bus.write_register(address, control_at, window.controls["commit"],
                                         timeout=timeout)
                event = Answered()
            else:
                if action.wait:
                    await asyncio.sleep(poll_interval_s)
                words = await bus.read_input(address, status_at, window.input_words,
                                             timeout=timeout)
                event = Status(OtaStatus.decode(words))
        except ModbusError as exc:
            event = Exception_(exc.code)
        except (NoResponse, BadReply) as exc:
            event = NoAnswer(str(exc))
        if not isinstance(event, Answered):
            log.debug("OTA to node %d: %s in phase %s", address, event, transfer.phase)
        transfer.feed(event, time.monotonic())
        if transfer.phase not in ("offer", "sync") and transfer.done_bytes != reported:
            reported = transfer.done_bytes
            progress(reported, offer.size)
    log.info("OTA to node %d: %s", address,
             "verified and staged" if wait_verified else "committed")


def image_from_release(directory: Path) -> bytes:
    """The image stream of a release directory (manifest.json, manifest.sig, files/...)."""
    root = directory / "files"
    files = {p.relative_to(root).as_posix(): p.read_bytes()
             for p in sorted(root.rglob("*")) if p.is_file()}
    return pack((directory / "manifest.json").read_bytes(),
                (directory / "manifest.sig").read_bytes(), files)
