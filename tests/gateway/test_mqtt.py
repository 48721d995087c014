"""The gateway's MQTT session against a real Mosquitto: what the fleet sees when the gateway
publishes, loses its broker, is refused by an ACL, dies, or receives commands."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.mqtt import Backoff, Command, CommandRejected, MqttSession, parse_command
from gateway.outbox import Message, Outbox
from tests.gateway.mosquitto import Broker, Received, Subscriber, publish_once

REPO = Path(__file__).resolve().parents[2]


def telemetry(gw: str, device: str, value: float) -> Message:
    return Message(f"edgefleet/v1/{gw}/{device}/telemetry",
                   {"v": 1, "device": device, "class": "fire", "ts": "2026-11-23T05:00:00.000Z",
                    "values": {"t": value}, "units": {"t": "degC"}}, "telemetry", device)


def seqs_by_device(messages: list[Received]) -> dict[str, list[int]]:
    """The fleet's de-duplication: first occurrence of each (device, seq), in arrival order."""
    seen: set[tuple[str, int]] = set()
    out: dict[str, list[int]] = {}
    for m in messages:
        body = json.loads(m.payload)
        key = (body["device"], body["seq"])
        if key not in seen:
            seen.add(key)
            out.setdefault(key[0], []).append(key[1])
    return out


async def run_until(session: MqttSession, outbox: Any, done: Callable[[], bool],
                    timeout: float, during: Callable[[], Awaitable[None]] | None = None) -> None:
    """Pump until `done()` holds (checked as the test's event), then stop cleanly."""
    stop = asyncio.Event()
    pump = asyncio.create_task(session.pump(outbox, stop))
    side = asyncio.create_task(during()) if during else None
    deadline = time.monotonic() + timeout
    try:
        while not done():
            if pump.done():
                pump.result()
                raise AssertionError("pump returned before the condition held")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s; stats {session.stats}")
            await asyncio.sleep(0.02)
        if side:
            await side
    finally:
        stop.set()
        await asyncio.wait_for(pump, 15)


def session_for(broker: Broker, gw: str, **kw: Any) -> MqttSession:
    kw.setdefault("backoff", Backoff(0.1, 1.0))
    return MqttSession(broker.host, broker.port, gateway_id=gw, **kw)


# -- pure pieces --------------------------------------------------------------------------------


def test_backoff_grows_to_its_cap_with_jitter_and_resets() -> None:
    b = Backoff(0.5, 30.0, rng=lambda: 1.0)
    assert [b.next() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    low = Backoff(0.5, 30.0, rng=lambda: 0.0)
    assert [low.next() for _ in range(3)] == [0.25, 0.5, 1.0]
    b.reset()
    assert b.next() == 0.5


def test_a_command_names_its_device_action_and_id() -> None:
    cmd = parse_command("gw-a", "edgefleet/v1/gw-a/cmd/node-3/relay/set", b'{"id":"c1","on":1}')
    assert cmd == Command("c1", "node-3", "relay/set", {"id": "c1", "on": 1},
                          "edgefleet/v1/gw-a/cmd/node-3/relay/set")


@pytest.mark.parametrize(("payload", "topic_tail", "error", "command_id"), [
    (b"{not json", "node-1/reset", "malformed JSON", None),
    (b"\xff\xfe", "node-1/reset", "malformed JSON", None),
    (b"[1, 2]", "node-1/reset", "JSON object", None),
    (b'{"x": 1}', "node-1/reset", '"id"', None),
    (b'{"id": "c9"}', "node-1", "cmd/<device-id>/<action>", "c9"),
])
def test_a_bad_command_is_rejected_with_a_reason(payload: bytes, topic_tail: str, error: str,
                                                 command_id: str | None) -> None:
    with pytest.raises(CommandRejected, match=error) as info:
        parse_command("gw-a", f"edgefleet/v1/gw-a/cmd/{topic_tail}", payload)
    assert info.value.command_id == command_id


# -- against a real broker ------------------------------------------------------------------------


def test_queued_telemetry_reaches_the_fleet_in_order_and_leaves_the_outbox(
        broker: Broker, tmp_path: Path) -> None:
    gw = "gw-order"
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.put_many([telemetry(gw, f"node-{i % 3}", i) for i in range(600)])
    with Subscriber(broker, f"edgefleet/v1/{gw}/+/telemetry") as fleet:
        session = session_for(broker, gw)
        asyncio.run(run_until(session, outbox, lambda: outbox.stats().depth == 0, 20))
        got = fleet.wait_count(600)
    assert [json.loads(m.payload)["values"]["t"] for m in got] == list(range(600))
    assert seqs_by_device(got) == {f"node-{d}": list(range(1, 201)) for d in range(3)}
    assert session.stats.acked == 600 and session.stats.refused == {}
    assert session.stats.latency.count == 600
    assert outbox.peek(10) == []


def test_a_broker_outage_loses_nothing_and_keeps_each_devices_order(tmp_path: Path) -> None:
    gw = "gw-outage"
    # Persistence: the fleet's session and its queue outlive the broker's restart.
    broker = Broker(tmp_path / "mosquitto", persistence=True)
    broker.start()
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.put_many([telemetry(gw, f"node-{i % 4}", i) for i in range(2000)])
    produced = 2000

    async def outage_while_producing() -> None:
        nonlocal produced
        # the field keeps producing through the outage; producers only ever touch the outbox
        async def produce() -> None:
            nonlocal produced
            for _ in range(150):
                outbox.put_many([telemetry(gw, f"node-{i % 4}", i) for i in range(20)])
                produced += 20
                await asyncio.sleep(0.02)
        producer = asyncio.create_task(produce())
        while session.stats.acked < 500:  # mid-stream
            await asyncio.sleep(0.005)
        # The fleet's ingest leaves first (cleanly, its session persists): Mosquitto 2.0.11
        # does not resend QoS 1 messages that were in flight to a persistent subscriber when
        # the broker stopped, and those then stall that subscriber's queue. That is the
        # broker's leg, not the gateway's, which is what this test is about.
        await asyncio.to_thread(fleet.pause)
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(3.0)  # the outage itself
        assert session.stats.connect_failures > 0
        await asyncio.to_thread(broker.start)
        await asyncio.to_thread(fleet.resume)
        await producer

    try:
        with Subscriber(broker, f"edgefleet/v1/{gw}/+/telemetry", client_id="fleet-ingest",
                        persistent=True) as fleet:
            session = session_for(broker, gw)
            asyncio.run(run_until(session, outbox,
                                  lambda: produced == 5000 and outbox.stats().depth == 0, 60,
                                  outage_while_producing))
            # generous: Mosquitto 2.0.11 hands a reconnected persistent session its queue
            # slowly (~100 msgs/s measured here); the gateway's part is done by now
            fleet.wait_for(lambda m: sum(map(len, seqs_by_device(m).values())) >= 5000, 60,
                           "every (device, seq) once")
            got = seqs_by_device(fleet.messages)
    finally:
        broker.stop()
    assert got == {f"node-{d}": list(range(1, 1251)) for d in range(4)}  # no gap, in order
    assert session.stats.reconnects >= 1
    assert len(fleet.messages) >= 5000  # duplicates after the reconnect are allowed


def test_the_broker_refuses_another_gateways_topic_and_it_is_dead_lettered(
        tls_broker: Broker, tmp_path: Path) -> None:
    assert tls_broker.pki is not None
    cert = tls_broker.pki.clients["gw-a"]
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.put_many([telemetry("gw-a", "node-1", 1), telemetry("gw-b", "node-9", 2),
                     telemetry("gw-a", "node-1", 3)])
    with Subscriber(tls_broker, "edgefleet/v1/#") as fleet:
        session = session_for(tls_broker, "gw-a", ca_file=str(tls_broker.pki.ca),
                              cert_file=str(cert.cert), key_file=str(cert.key))
        asyncio.run(run_until(session, outbox, lambda: outbox.stats().depth == 0, 20))
        fleet.wait_for(lambda m: sum(r.topic.endswith("/telemetry") for r in m) >= 2)
        telemetry_seen = [json.loads(r.payload)["values"]["t"] for r in fleet.messages
                          if r.topic.endswith("/telemetry")]
    assert telemetry_seen == [1, 3]
    [dead] = outbox.dead_letters()
    assert (dead.topic, dead.code, dead.reason) == (
        "edgefleet/v1/gw-b/node-9/telemetry", 135, "Not authorized")
    assert session.stats.refused == {135: 1}
    assert session.stats.acked == 2
    assert outbox.stats().dead_letters == 1


GATEWAY_PROCESS = textwrap.dedent("""
    import asyncio, sys
    from gateway.mqtt import MqttSession

    class Empty:
        def peek(self, limit, after_id=0): return []
        def ack(self, ids): pass
        def dead_letter(self, id, reason, code=None): pass

    async def main():
        session = MqttSession("127.0.0.1", int(sys.argv[1]), gateway_id=sys.argv[2],
                              health=lambda: {"buses": 1})
        await session.pump(Empty(), asyncio.Event())

    asyncio.run(main())
""")


def status_of(messages: list[Received]) -> list[tuple[bool, bool]]:
    return [(json.loads(m.payload)["online"], m.retain) for m in messages]


def test_a_gateway_that_dies_is_reported_offline_by_its_last_will(broker: Broker) -> None:
    gw = "gw-lwt"
    topic = f"edgefleet/v1/{gw}/status"
    with Subscriber(broker, topic) as fleet:
        proc = subprocess.Popen([sys.executable, "-c", GATEWAY_PROCESS, str(broker.port), gw],
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            fleet.wait_for(lambda m: any(json.loads(r.payload)["online"] for r in m), 15,
                           "the gateway online")
            online = json.loads(fleet.messages[-1].payload)
            assert online["health"] == {"buses": 1} and online["ts"].endswith("Z")
            proc.send_signal(signal.SIGKILL)  # a power cut: no DISCONNECT, no goodbye
        finally:
            proc.kill()
            proc.wait()
        fleet.wait_for(lambda m: not json.loads(m[-1].payload)["online"], 10, "the Last Will")
        assert json.loads(fleet.messages[-1].payload) == {"v": 1, "online": False,
                                                          "gateway": gw}
    with Subscriber(broker, topic) as late_comer:  # retained: a dashboard opened later sees it
        assert status_of(late_comer.wait_count(1)) == [(False, True)]


def test_an_abrupt_disconnect_publishes_the_will_and_the_session_comes_back_online(
        broker: Broker) -> None:
    gw = "gw-abort"
    with Subscriber(broker, f"edgefleet/v1/{gw}/status") as fleet:
        session = session_for(broker, gw)

        async def drop_link() -> None:
            await asyncio.to_thread(fleet.wait_count, 1)
            assert session._client is not None
            session._client.abort()

        asyncio.run(run_until(session, _Empty(), lambda: session.stats.reconnects >= 1
                              and len(fleet.messages) >= 3, 15, drop_link))
        statuses = status_of(fleet.wait_count(4))
    # online, Will (offline), online again, and offline said by the clean stop
    assert statuses == [(True, False), (False, False), (True, False), (False, False)]


class _Empty:
    def peek(self, limit: int, after_id: int = 0) -> list[Any]:
        return []

    def ack(self, ids: Any) -> None:
        pass

    def dead_letter(self, id: int, reason: str, code: int | None = None) -> None:
        pass


def test_a_command_reaches_the_handler_and_a_malformed_one_is_answered_not_ok(
        broker: Broker, tmp_path: Path) -> None:
    gw = "gw-cmd"
    received: list[Command] = []

    async def handler(cmd: Command) -> None:
        received.append(cmd)
        session.ack(cmd.id, True)

    with Subscriber(broker, f"edgefleet/v1/{gw}/ack") as acks, \
            Subscriber(broker, f"edgefleet/v1/{gw}/status") as status:
        session = session_for(broker, gw, on_command=handler)

        async def fleet_sends() -> None:
            await asyncio.to_thread(status.wait_count, 1)  # online = subscribed to commands
            await asyncio.to_thread(publish_once, broker, f"edgefleet/v1/{gw}/cmd/node-2/reset",
                                    b'{"id": "cmd-17", "latched": true}')
            await asyncio.to_thread(publish_once, broker, f"edgefleet/v1/{gw}/cmd/node-2/reset",
                                    b'{"id": "cmd-18", oops')

        with Outbox(tmp_path / "outbox.db") as outbox:  # acks are stored, then delivered
            asyncio.run(run_until(session, outbox, lambda: len(acks.messages) >= 2, 15,
                                  fleet_sends))
        answers = [json.loads(m.payload) for m in acks.wait_count(2)]
    assert received == [Command("cmd-17", "node-2", "reset", {"id": "cmd-17", "latched": True},
                                f"edgefleet/v1/{gw}/cmd/node-2/reset")]
    ok, bad = answers
    assert ok["id"] == "cmd-17" and ok["ok"] is True and "error" not in ok and ok["v"] == 1
    assert bad["id"] is None and bad["ok"] is False
    assert bad["error"].startswith("malformed JSON")
    assert session.stats.commands == 1 and session.stats.commands_rejected == 1
