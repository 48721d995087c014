"""The PUBACK window without a broker: what each reason code means, the Receive Maximum budget
shared with the status, in-order settlement, and the back-off after a transient refusal."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from typing import Any

import aiomqtt
import pytest

from gateway._aiomqtt_shim import PRIVATE_API, PubackClient, check_private_api
from gateway.mqtt import outbox_turn
from gateway.pubwindow import PubackWindow, Settled, Verdict, classify
from tests.gateway.mosquitto import Pki


@pytest.mark.parametrize(("code", "verdict"), [
    (0x00, Verdict.DELIVERED),  # success
    (0x10, Verdict.DELIVERED),  # no matching subscribers: the broker has it
    (0x80, Verdict.RETRY),  # unspecified error
    (0x91, Verdict.RETRY),  # packet identifier in use
    (0x97, Verdict.RETRY),  # quota exceeded
    (0x83, Verdict.REFUSED),  # implementation specific error
    (0x87, Verdict.REFUSED),  # not authorized
    (0x90, Verdict.REFUSED),  # topic name invalid
    (0x99, Verdict.REFUSED),  # payload format invalid
    (0xA2, Verdict.REFUSED),  # a code this gateway does not know: not retried for ever
])
def test_each_puback_reason_code_has_one_meaning(code: int, verdict: Verdict) -> None:
    assert classify(code) is verdict


def window(limit: int = 100, receive_maximum: int = 5, delay: float = 1.0,
           max_attempts: int = 10) -> PubackWindow:
    return PubackWindow(limit, receive_maximum, lambda: delay, max_attempts=max_attempts)


def test_the_window_is_the_smaller_of_its_limit_and_the_brokers_receive_maximum() -> None:
    assert window(100, 20).capacity == 20
    assert window(3, 20).capacity == 3
    with pytest.raises(ValueError):
        window(100, 0)


def test_a_full_window_sends_nothing_more_until_a_puback() -> None:
    w = window(receive_maximum=3)
    for i in (1, 2, 3):
        w.sent(i)
    assert w.room() == 0
    with pytest.raises(RuntimeError):
        w.sent(4)
    assert w.puback(1, 0, now=0.0) == [Settled(1, Verdict.DELIVERED, 0, 0)]
    assert w.room() == 1


def test_pubacks_settle_in_the_order_the_messages_were_sent() -> None:
    w = window()
    for i in (1, 2, 3):
        w.sent(i)
    assert w.puback(2, 0, 0.0) == []  # 1 still outstanding
    assert w.puback(3, 0x87, 0.0) == []
    assert w.puback(1, 0, 0.0) == [Settled(1, Verdict.DELIVERED, 0, 0),
                                   Settled(2, Verdict.DELIVERED, 0, 0),
                                   Settled(3, Verdict.REFUSED, 0x87, 0)]
    with pytest.raises(KeyError):
        w.puback(1, 0, 0.0)


def test_the_status_borrows_a_slot_ahead_of_the_outbox_and_never_overfills() -> None:
    w = window(receive_maximum=2)
    w.sent(1)
    w.sent(2)
    w.want()  # the status is due while the outbox fills the window
    assert not w.borrow() and w.room() == 0
    w.puback(1, 0, 0.0)
    assert w.room() == 0  # the freed slot is the status's, not the outbox's
    assert w.borrow() and w.in_flight == 2 and w.room() == 0
    w.give_back()
    assert w.room() == 1


def test_a_transient_refusal_pauses_then_rewinds_to_the_refused_message() -> None:
    w = window(delay=2.0)
    for i in (10, 11, 12):
        w.sent(i)
    [quota] = w.puback(10, 0x97, now=100.0)
    assert quota == Settled(10, Verdict.RETRY, 0x97, 1)
    assert w.paused and w.room() == 0
    assert w.rewind(now=103.0) is None  # 11 and 12 still in flight
    w.puback(11, 0, 100.5)
    w.puback(12, 0, 100.5)
    assert w.resume_in(101.0) == pytest.approx(1.0)
    assert w.rewind(now=101.0) is None  # back-off not over
    assert w.rewind(now=102.0) == 9  # read again from id 10
    assert not w.paused and w.room() == 5


def test_a_message_refused_transiently_max_attempts_times_is_refused_for_good() -> None:
    w = window(max_attempts=3)
    verdicts = []
    for attempt in range(3):
        w.sent(7)
        verdicts += [s.verdict for s in w.puback(7, 0x80, float(attempt))]
        w.rewind(float(attempt) + 10)
    assert verdicts == [Verdict.RETRY, Verdict.RETRY, Verdict.REFUSED]


@pytest.mark.parametrize(("sent", "acks"), [
    ([1, 2, 3], [(1, 0), (2, 0), (3, 0)]),  # the common case: in order, all delivered
    ([1, 2, 3], [(2, 0), (3, 0), (1, 0)]),  # later ones first: settle when the head comes
    ([1, 2, 3, 4], [(1, 0), (2, 0x97), (3, 0), (4, 0)]),  # a quota refusal mid-batch
    ([1, 2, 3], [(1, 0x87), (2, 0), (3, 0x90)]),  # definitive refusals around a delivery
    ([1, 2, 3, 4], [(3, 0x80), (1, 0), (2, 0x10), (4, 0)]),  # mixed, out of order
])
def test_a_batch_of_pubacks_settles_exactly_as_one_puback_at_a_time(
        sent: list[int], acks: list[tuple[int, int]]) -> None:
    def window() -> tuple[PubackWindow, list[str]]:
        calls: list[str] = []
        delays = iter([1.0, 2.0, 4.0, 8.0])

        def delay() -> float:
            calls.append("delay")
            return next(delays)
        w = PubackWindow(10, 10, delay, on_delivered=lambda: calls.append("reset"))
        return w, calls

    one, one_calls = window()
    for i in sent:
        one.sent(i)
    settled = [s for msg_id, code in acks for s in one.puback(msg_id, code, 5.0)]
    expected_delivered = [s.id for s in settled if s.verdict is Verdict.DELIVERED]
    expected_others = [s for s in settled if s.verdict is not Verdict.DELIVERED]

    batch, batch_calls = window()
    batch.sent_many(sent)
    delivered, others = batch.pubacks(acks, 5.0)

    assert delivered == expected_delivered
    assert others == expected_others
    assert (batch.in_flight, batch.room(), batch.paused) == (one.in_flight, one.room(), one.paused)
    assert batch.rewind(100.0) == one.rewind(100.0)
    # a reset may be merged (it is idempotent), never moved past a refusal's delay
    assert [c for i, c in enumerate(batch_calls) if c != "reset" or batch_calls[i - 1:i] != [c]] \
        == [c for i, c in enumerate(one_calls) if c != "reset" or one_calls[i - 1:i] != [c]]


def test_a_batch_sent_beyond_the_room_or_twice_is_refused() -> None:
    w = PubackWindow(3, 3, lambda: 0.0)
    with pytest.raises(RuntimeError):
        w.sent_many([1, 2, 3, 4])
    with pytest.raises(RuntimeError):
        w.sent_many([1, 1])


def test_the_aiomqtt_private_api_the_shim_relies_on_is_still_there() -> None:
    """Fails by name when an aiomqtt upgrade renames what gateway/_aiomqtt_shim.py uses."""
    async def build() -> list[str]:
        client = PubackClient("127.0.0.1", 1, protocol=aiomqtt.ProtocolVersion.V5)
        return check_private_api(client)

    assert asyncio.run(build()) == []
    assert set(PRIVATE_API) == {"_client", "_loop", "_disconnected", "_connected"}


def test_the_shim_check_names_what_is_missing() -> None:
    async def build() -> list[str]:
        client = aiomqtt.Client("127.0.0.1", 1)
        del client._disconnected  # what an upgrade that renamed it would look like
        return check_private_api(client)

    [problem] = asyncio.run(build())
    assert "_disconnected" in problem


@pytest.mark.parametrize("socket_takes", ["all", "part", "nothing", "error", "paho_busy"])
def test_a_window_reaches_the_wire_whole_and_in_order_however_much_the_socket_takes(
        socket_takes: str) -> None:
    """The shim sends a window straight to the socket and queues on paho's writer whatever the
    socket did not take (or all of it, behind paho's own queue): what was sent followed by what
    was queued is the whole window, byte for byte, and every PUBACK is awaited from the start."""
    messages = [(f"edgefleet/v1/gw/dev{i}/telemetry", b"x" * (40 + i * 50), 1, False)
                for i in range(6)] + [("edgefleet/v1/gw/status", b"{}", 1, True)]

    async def publish(send: Any) -> tuple[bytes, bytes, list[Any], int]:
        client = PubackClient("127.0.0.1", 1, protocol=aiomqtt.ProtocolVersion.V5)
        c: Any = client._client  # paho's private parts, stood in for below
        c._sock = object()  # connected, as far as the shim looks
        wire, queued = bytearray(), bytearray()
        if socket_takes == "paho_busy":
            c._out_packet.append({"packet": b"paho's own"})
        c._sock_send = lambda data: send(client, wire, data)
        c._packet_queue = lambda command, packet, mid, qos, info=None: queued.extend(packet)
        futures = client.publish_many(messages)
        c._sock = None
        return bytes(wire), bytes(queued), futures, len(client._pubacks)

    def take(n: int | None, error: type[OSError] | None = None) -> Any:
        def send(client: PubackClient, wire: bytearray, data: bytearray) -> int:
            assert len(client._pubacks) == len(messages)  # awaited before the first byte goes
            if error is not None:
                raise error()
            wire.extend(data[:n])
            return len(data[:n])
        return send

    sends = {"all": take(None), "part": take(37), "nothing": take(None, BlockingIOError),
             "error": take(None, ConnectionResetError), "paho_busy": take(None)}
    wire, queued, futures, awaited = asyncio.run(publish(sends[socket_takes]))
    whole = wire + queued
    # The window, parsed back: seven PUBLISHes, QoS 1, in order, each with its topic and payload.
    at, seen = 0, []
    while at < len(whole):
        assert whole[at] & 0xF0 == 0x30 and whole[at] & 0x06 == 0x02
        length, shift, at = 0, 0, at + 1
        while True:
            length |= (whole[at] & 0x7F) << shift
            shift, at = shift + 7, at + 1
            if not whole[at - 1] & 0x80:
                break
        body, at = whole[at:at + length], at + length
        topic_len = int.from_bytes(body[:2], "big")
        seen.append((body[2:2 + topic_len].decode(), body[2 + topic_len + 3:]))
    assert seen == [(topic, payload) for topic, payload, _, _ in messages]
    assert len(futures) == awaited == len(messages)
    expected_wire = {"all": len(whole), "part": 37, "nothing": 0, "error": 0, "paho_busy": 0}
    assert len(wire) == expected_wire[socket_takes]


@pytest.mark.parametrize(("acked", "waiting", "paused", "turn"), [
    (100, 0, False, "ack"),  # a page of deliveries gathered: delete them
    (100, 500, True, "ack"),  # even while paused: deliveries are deliveries
    (99, 0, False, "read"),  # nothing read ahead: read the next page
    (0, 39, False, "read"),  # less than two windows wait
    (0, 40, False, None),  # two windows wait: leave the outbox alone
    (0, 0, True, None),  # a back-off holds the window: it rewinds and reads again after
])
def test_the_outbox_takes_one_turn_while_the_broker_works(acked: int, waiting: int,
                                                          paused: bool, turn: str | None) -> None:
    assert outbox_turn(acked, waiting, capacity=20, paused=paused, ack_batch=100) == turn


def test_over_tls_every_waiting_puback_is_settled_in_one_read_however_many_records(
        pki: Pki) -> None:
    """Under TLS a read returns at most one record, and Mosquitto writes one record per packet,
    so a short read does not mean the socket is drained: 200 PUBACKs waiting on a real TLS
    connection are all settled by one call of the reader, not one per event-loop wake-up."""
    n = 200
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    client_ctx = ssl.create_default_context(cafile=str(pki.ca))
    client_ctx.check_hostname = False
    ours, theirs = socket.socketpair()
    with server_ctx.wrap_socket(theirs, server_side=True,
                                do_handshake_on_connect=False) as broker:
        handshake = threading.Thread(target=broker.do_handshake)
        handshake.start()
        with client_ctx.wrap_socket(ours) as tls:
            handshake.join(timeout=10)
            assert not handshake.is_alive(), "the TLS handshake did not finish"
            for mid in range(1, n + 1):  # one record each, as Mosquitto writes them
                broker.sendall(bytes([0x40, 2]) + mid.to_bytes(2, "big"))
            tls.setblocking(False)

            async def read_once() -> list[int | None]:
                client = PubackClient("127.0.0.1", 1, protocol=aiomqtt.ProtocolVersion.V5)
                c: Any = client._client
                c._sock = tls
                loop = asyncio.get_running_loop()
                futures = [loop.create_future() for _ in range(n)]
                client._pubacks.update(zip(range(1, n + 1), futures, strict=True))
                client._loop_read()
                c._sock = None
                return [f.result() if f.done() else None for f in futures]

            settled = asyncio.run(read_once())
    assert settled == [0] * n
