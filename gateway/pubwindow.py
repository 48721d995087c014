"""The PUBACK window, pure: which QoS 1 publish may go out now, and what each PUBACK means.

Sans-IO (mqttproto's client state machine is the model): no sockets, no clock, no asyncio. The
MQTT session (gateway/mqtt.py) feeds it events (``sent``, ``puback``, ``borrow``) with the time,
and acts on what it answers. Table tests drive it without a broker (tests/gateway/test_pubwindow).

Rules it owns:

- **Receive Maximum.** Every QoS 1 PUBLISH of the connection (outbox messages, command acks,
  which are outbox rows, and the retained status) counts against one budget:
  ``min(limit, receive_maximum)`` awaiting their PUBACK. The status publisher ``borrow()``\\ s a
  slot and gets priority over the outbox, so a backlog never starves the status.
- **What a PUBACK reason code means** (MQTT 5, 3.4.2.1), :func:`classify`:
  below 0x80 the message was delivered; 0x80 (unspecified error), 0x97 (quota exceeded) and
  0x91 (packet identifier in use) are *transient*: the same message is sent again after a
  back-off; any other code at or above 0x80 (0x83 implementation specific, 0x87 not authorized,
  0x90 topic name invalid, 0x99 payload format invalid, or one this gateway does not know) is a
  definitive refusal, and the message is dead-lettered. A message refused transiently
  ``max_attempts`` times is dead-lettered too, so one message cannot stop the queue for ever.
- **Order.** PUBACKs are settled in the order the messages were sent. After a transient code
  the window stops sending, lets what is in flight settle, waits the back-off, and then asks
  the caller to read the outbox again from the refused message (:meth:`rewind`).
"""

from __future__ import annotations

import enum
import functools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFINITIVE",
    "TRANSIENT",
    "PubackWindow",
    "Settled",
    "Verdict",
    "classify",
]

REFUSAL = 0x80
#: PUBACK reason codes worth sending the same message again for.
TRANSIENT = frozenset({0x80, 0x91, 0x97})
#: Refusals that will not change by retrying (the rest of >= 0x80 is treated the same way).
DEFINITIVE = frozenset({0x83, 0x87, 0x90, 0x99})


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # delete from the outbox
    RETRY = "retry"  # keep; send again after the back-off
    REFUSED = "refused"  # dead-letter, with the code


def classify(code: int) -> Verdict:
    """Pure: one PUBACK reason code -> what to do with the message."""
    if code < REFUSAL:
        return Verdict.DELIVERED
    if code in TRANSIENT:
        return Verdict.RETRY
    return Verdict.REFUSED


@dataclass(frozen=True)
class Settled:
    id: int
    verdict: Verdict
    code: int
    attempts: int  # how many times this message was refused transiently, this one included


class PubackWindow:
    """One connection's QoS 1 publishes awaiting a PUBACK.

    ``delays`` gives the back-off after each transient refusal (seconds; the session passes its
    jittered ``Backoff.next``); a delivery resets it through ``on_delivered``.
    """

    def __init__(self, limit: int, receive_maximum: int, delays: Callable[[], float], *,
                 on_delivered: Callable[[], None] = lambda: None, max_attempts: int = 10) -> None:
        if limit < 1 or receive_maximum < 1:
            raise ValueError("the window needs room for at least one publish")
        self.capacity = min(limit, receive_maximum)
        self.max_attempts = max_attempts
        self._delays = delays
        self._on_delivered = on_delivered
        self._in_flight: OrderedDict[int, int | None] = OrderedDict()  # id -> code once PUBACKed
        self._answered = 0  # entries of _in_flight with their code, waiting for an older one
        self._borrowed = 0  # slots held by other publishers (the status)
        self._wanted = 0  # other publishers waiting for a slot: they go first
        self._attempts: dict[int, int] = {}
        self._resume_at: float | None = None  # paused after a transient refusal until then
        self._rewind_to: int | None = None  # the lowest id refused transiently

    # -- what may go out ----------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._in_flight) + self._borrowed

    @property
    def paused(self) -> bool:
        return self._rewind_to is not None

    def room(self) -> int:
        """How many outbox messages may be sent now."""
        if self.paused:
            return 0
        return max(0, self.capacity - self.in_flight - self._wanted)

    def sent(self, msg_id: int) -> None:
        if self.room() < 1:
            raise RuntimeError(f"publish {msg_id} sent with no room in the window")
        if msg_id in self._in_flight:
            raise RuntimeError(f"publish {msg_id} is already in flight")
        self._in_flight[msg_id] = None

    def sent_many(self, msg_ids: Sequence[int]) -> None:
        """:meth:`sent` for a batch (the session sends a window refill as one write)."""
        if len(msg_ids) > self.room():
            raise RuntimeError(f"{len(msg_ids)} publishes sent with room for {self.room()}")
        in_flight = self._in_flight
        for msg_id in msg_ids:
            if msg_id in in_flight:
                raise RuntimeError(f"publish {msg_id} is already in flight")
            in_flight[msg_id] = None

    # -- other QoS 1 publishers share the budget ------------------------------------------------
    def want(self) -> None:
        """Another publisher waits for a slot; the outbox gets no more until it has one."""
        self._wanted += 1

    def borrow(self) -> bool:
        """Take a slot for another publisher (after ``want()``); False while there is none."""
        if self.in_flight >= self.capacity:
            return False
        self._wanted = max(0, self._wanted - 1)
        self._borrowed += 1
        return True

    def give_back(self) -> None:
        self._borrowed = max(0, self._borrowed - 1)

    def cancel_want(self) -> None:
        self._wanted = max(0, self._wanted - 1)

    # -- PUBACKs --------------------------------------------------------------------------------
    def puback(self, msg_id: int, code: int, now: float) -> list[Settled]:
        """Record one PUBACK; returns what is now settled, in the order it was sent."""
        if msg_id not in self._in_flight:
            raise KeyError(f"PUBACK for {msg_id}, which is not in flight")
        if self._in_flight[msg_id] is None:
            self._answered += 1
        self._in_flight[msg_id] = code
        return self._drain(now)

    def _drain(self, now: float) -> list[Settled]:
        """Settle the oldest messages in flight whose PUBACK has come, up to the first without."""
        out: list[Settled] = []
        while self._in_flight:
            head, head_code = next(iter(self._in_flight.items()))
            if head_code is None:
                break
            del self._in_flight[head]
            self._answered -= 1
            out.append(self._settle(head, head_code, now))
        return out

    def pubacks(self, results: Iterable[tuple[int, int]],
                now: float) -> tuple[list[int], list[Settled]]:
        """:meth:`puback` for a batch of (id, reason code), in the order they are given.

        Returns the ids delivered, in order, and every other settlement (retry, refused). The
        common case (a delivery of the oldest message in flight) takes no :class:`Settled` and
        no back-off reset per message; the outcome is the same as calling :meth:`puback` for
        each in turn, table-tested against it.
        """
        in_flight = self._in_flight
        delivered: list[int] = []
        others: list[Settled] = []
        reset_due = False
        for msg_id, code in results:
            if code < REFUSAL and in_flight:
                head, head_code = in_flight.popitem(last=False)
                if head == msg_id and head_code is None:  # the oldest, delivered: the usual
                    if self._attempts:
                        self._attempts.pop(msg_id, None)
                    delivered.append(msg_id)
                    reset_due = True
                    if not self._answered:
                        continue
                    settling = self._drain  # later ones PUBACKed earlier: settle them now
                else:  # not the oldest: put it back where it was
                    in_flight[head] = head_code
                    in_flight.move_to_end(head, last=False)
                    settling = functools.partial(self.puback, msg_id, code)
            else:
                settling = functools.partial(self.puback, msg_id, code)
            if reset_due:  # the back-off resets before a later refusal draws its delay
                self._on_delivered()
                reset_due = False
            for settled in settling(now):
                if settled.verdict is Verdict.DELIVERED:
                    delivered.append(settled.id)
                else:
                    others.append(settled)
        if reset_due:
            self._on_delivered()
        return delivered, others

    def _settle(self, msg_id: int, code: int, now: float) -> Settled:
        verdict = classify(code)
        attempts = self._attempts.get(msg_id, 0)
        if verdict is Verdict.RETRY:
            attempts += 1
            if attempts >= self.max_attempts:
                self._attempts.pop(msg_id, None)
                return Settled(msg_id, Verdict.REFUSED, code, attempts)
            self._attempts[msg_id] = attempts
            delay = self._delays()
            self._resume_at = max(self._resume_at or now, now + delay)
            self._rewind_to = msg_id if self._rewind_to is None else min(self._rewind_to, msg_id)
            return Settled(msg_id, verdict, code, attempts)
        self._attempts.pop(msg_id, None)
        if verdict is Verdict.DELIVERED:
            self._on_delivered()
        return Settled(msg_id, verdict, code, attempts)

    # -- after a transient refusal ----------------------------------------------------------------
    def resume_in(self, now: float) -> float | None:
        """Seconds until :meth:`rewind` will answer (None when not paused)."""
        if self._rewind_to is None or self._resume_at is None:
            return None
        return max(0.0, self._resume_at - now)

    def rewind(self, now: float) -> int | None:
        """When paused, nothing of ours in flight and the back-off over: the ``after_id`` to
        read the outbox from again (the refused message is the next one read). Else None."""
        if self._rewind_to is None or self._in_flight or (self._resume_at or 0) > now:
            return None
        after_id, self._rewind_to, self._resume_at = self._rewind_to - 1, None, None
        return after_id
