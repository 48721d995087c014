"""MQTT edge cases against a real Mosquitto, seen on the wire and from the fleet's side: the
broker's Receive Maximum, transient and definitive PUBACK refusals, retained commands across a
reconnect, connect and SUBACK refusals in the log, and declared drops that add up.

Reason codes Mosquitto 2.0 cannot be made to send (PUBACK 0x97 and 0x80, a SUBACK refusal) are
put on the wire by tests/gateway/mqttwire.py in place of the broker's own; everything else is
the real broker's doing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from contracts.mqtt import DropsPayload, parse_payload, parse_topic
from gateway.mqtt import Backoff, Command, MqttSession
from gateway.outbox import Message, Outbox
from tests.gateway.mosquitto import Broker, Received, Subscriber, publish_once
from tests.gateway.mqttwire import WireProxy
from tests.gateway.test_mqtt import run_until

GW = "gw-edge"


def telemetry(device: str, n: int, pad: int = 0) -> Message:
    return Message(f"edgefleet/v1/{GW}/{device}/telemetry",
                   {"v": 1, "device": device, "class": "fire", "ts": "2026-11-23T05:00:00.000Z",
                    "values": {"t": float(n)}, "units": {"t": "degC"}, "pad": "x" * pad},
                   "telemetry", device)


def alarm(device: str, n: int) -> Message:
    return Message(f"edgefleet/v1/{GW}/{device}/alarm",
                   {"v": 1, "device": device, "class": "fire", "ts": "2026-11-23T05:00:00.000Z",
                    "alarm_id": f"{device}:smoke:{n}", "type": "smoke", "state": "raised"},
                   "alarm", device)


def session_via(proxy: WireProxy, **kw: Any) -> MqttSession:
    kw.setdefault("backoff", Backoff(0.05, 0.5))
    kw.setdefault("retry_backoff", Backoff(0.02, 0.1))
    return MqttSession(proxy.host, proxy.port, gateway_id=GW, **kw)


def delivered(messages: list[Received], device: str) -> set[int]:
    return {json.loads(m.payload)["seq"] for m in messages
            if m.topic.endswith(f"/{device}/telemetry") or m.topic.endswith(f"/{device}/alarm")}


def test_outbox_acks_and_status_together_never_exceed_a_receive_maximum_of_5(
        tmp_path: Path) -> None:
    broker = Broker(tmp_path / "mosquitto", extra_config="max_inflight_messages 5\n")
    broker.start()
    acked: list[str] = []

    async def handler(cmd: Command) -> None:
        session.ack(cmd.id, True)
        acked.append(cmd.id)

    try:
        with WireProxy(broker) as proxy, Outbox(tmp_path / "outbox.db") as outbox, \
                Subscriber(broker, f"edgefleet/v1/{GW}/#") as fleet:
            for start in range(0, 3000, 500):
                outbox.put_many([telemetry(f"fire-{i % 4}", i) for i in range(start, start + 500)])
            # a status every 10 ms and a burst of commands, all during the backlog's drain
            session = session_via(proxy, status_interval=0.01, on_command=handler)

            async def commands() -> None:
                await asyncio.to_thread(fleet.wait_for, lambda ms: any(
                    m.topic.endswith("/status") for m in ms), 10, "the gateway online")
                for i in range(30):
                    await asyncio.to_thread(publish_once, broker,
                                            f"edgefleet/v1/{GW}/cmd/fire-1/repoll",
                                            json.dumps({"id": f"c{i}"}).encode())

            asyncio.run(run_until(session, outbox, lambda: len(acked) == 30
                                  and outbox.stats().depth == 0, 60, commands))
            messages = fleet.wait_for(lambda ms: sum(m.topic.endswith("/ack") for m in ms) >= 30,
                                      10, "30 acks")
        assert 5 >= proxy.max_outstanding >= 4, proxy.max_outstanding  # full, never over
        assert all(len(delivered(messages, f"fire-{d}")) == 750 for d in range(4))
        assert sum(m.topic.endswith("/status") for m in messages) > 3
    finally:
        broker.stop()


def test_a_quota_exceeded_puback_is_retried_and_the_message_still_arrives(
        tmp_path: Path, broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    with WireProxy(broker) as proxy, Outbox(tmp_path / "outbox.db") as outbox, \
            Subscriber(broker, f"edgefleet/v1/{GW}/#") as fleet, \
            caplog.at_level(logging.WARNING, logger="gateway.mqtt"):
        outbox.put_many([telemetry("fire-1", i) for i in range(200)])
        proxy.refuse["/fire-1/telemetry"] = [0x97, 0x80, 0x97]  # transient, three times
        session = session_via(proxy)
        asyncio.run(run_until(session, outbox, lambda: outbox.stats().depth == 0, 30))
        messages = fleet.wait_for(lambda ms: len(delivered(ms, "fire-1")) == 200, 10,
                                  "every seq of fire-1")
        assert outbox.stats().dead_letters == 0 and session.stats.retried == 3
    assert [code for _, code in proxy.injected] == [0x97, 0x80, 0x97]
    assert delivered(messages, "fire-1") == set(range(1, 201))
    assert "Quota exceeded" in caplog.text and "sending it again" in caplog.text


def test_a_refusal_that_retrying_cannot_change_is_dead_lettered_at_once(
        tmp_path: Path, broker: Broker) -> None:
    with WireProxy(broker) as proxy, Outbox(tmp_path / "outbox.db") as outbox:
        outbox.put_many([telemetry("fire-1", i) for i in range(20)])
        proxy.refuse["/fire-1/telemetry"] = [0x99]  # payload format invalid
        session = session_via(proxy)
        asyncio.run(run_until(session, outbox, lambda: outbox.stats().depth == 0, 30))
        [letter] = outbox.dead_letters()
        assert (letter.code, letter.seq) == (0x99, 1) and session.stats.retried == 0


def test_a_message_refused_transiently_for_ever_is_dead_lettered_and_the_queue_moves_on(
        tmp_path: Path, broker: Broker) -> None:
    with WireProxy(broker) as proxy, Outbox(tmp_path / "outbox.db") as outbox:
        outbox.put_many([telemetry("fire-1", i) for i in range(5)])
        proxy.refuse['"seq":1}'] = [0x80] * 4  # always the same message
        session = session_via(proxy, max_attempts=4)
        asyncio.run(run_until(session, outbox, lambda: outbox.stats().depth == 0, 30))
        [letter] = outbox.dead_letters()
        assert letter.code == 0x80 and "after 4 attempts" in letter.reason


def test_a_retained_command_is_not_run_again_when_the_gateway_reconnects(
        tmp_path: Path, broker: Broker) -> None:
    executed: list[str] = []

    async def handler(cmd: Command) -> None:
        executed.append(cmd.id)
        session.ack(cmd.id, True)

    with WireProxy(broker) as proxy, Outbox(tmp_path / "outbox.db") as outbox, \
            Subscriber(broker, f"edgefleet/v1/{GW}/status") as status:
        session = session_via(proxy, on_command=handler)
        online = lambda n: lambda ms: sum(json.loads(m.payload)["online"] for m in ms) >= n  # noqa: E731

        async def fleet() -> None:
            await asyncio.to_thread(status.wait_for, online(1), 10, "online")
            # a careless fleet publishes a command retained
            await asyncio.to_thread(publish_once, broker, f"edgefleet/v1/{GW}/cmd/fire-1/reset",
                                    b'{"id": "cmd-1"}', retain=True)
            while executed != ["cmd-1"]:
                await asyncio.sleep(0.01)
            proxy.cut()  # the uplink drops; the gateway reconnects and subscribes again
            await asyncio.to_thread(status.wait_for, online(2), 20, "online again")
            # a later command is the barrier: a re-sent retained one would arrive before it
            await asyncio.to_thread(publish_once, broker, f"edgefleet/v1/{GW}/cmd/fire-1/repoll",
                                    b'{"id": "cmd-2"}')
            while "cmd-2" not in executed:
                await asyncio.sleep(0.01)

        asyncio.run(run_until(session, outbox, lambda: "cmd-2" in executed, 30, fleet))
    assert executed == ["cmd-1", "cmd-2"]
    assert session.stats.reconnects >= 1


def test_a_refused_connect_is_logged_at_warning_with_the_brokers_reason(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broker = Broker(tmp_path / "mosquitto", extra_config="allow_anonymous false\n")
    broker.config.write_text(broker.config.read_text().replace("allow_anonymous true\n", ""))
    broker.start()
    try:
        with Outbox(tmp_path / "outbox.db") as outbox, \
                caplog.at_level(logging.WARNING, logger="gateway.mqtt"):
            session = MqttSession(broker.host, broker.port, gateway_id=GW,
                                  backoff=Backoff(0.05, 0.2))
            asyncio.run(run_until(session, outbox, lambda: session.stats.connect_failures >= 2,
                                  15))
    finally:
        broker.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("connect to" in w and "authori" in w for w in warnings), warnings


def test_a_refused_command_subscription_is_logged_at_warning_with_its_reason(
        tmp_path: Path, broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    with WireProxy(broker) as proxy, Outbox(tmp_path / "outbox.db") as outbox, \
            caplog.at_level(logging.WARNING, logger="gateway.mqtt"):
        proxy.suback_code = 0x87
        session = session_via(proxy)
        asyncio.run(run_until(session, outbox, lambda: session.stats.connected, 15))
    assert "refused the command subscription" in caplog.text
    assert "Not authorized" in caplog.text


def test_delivered_plus_declared_drops_equals_produced_for_every_device(
        tmp_path: Path, broker: Broker) -> None:
    devices = ["fire-1", "fire-2", "flood-3"]
    with Outbox(tmp_path / "outbox.db", max_bytes=40_000) as outbox, \
            Subscriber(broker, f"edgefleet/v1/{GW}/#") as fleet:
        for i in range(1500):  # the broker is unreachable for a while: the disk bound fills
            device = devices[i % 3]
            outbox.put_many([alarm(device, i) if i % 97 == 0 else telemetry(device, i, pad=40)])
        assert outbox.stats().dropped_telemetry > 500
        produced = {d: outbox.next_seq(d) - 1 for d in devices}
        session = MqttSession(broker.host, broker.port, gateway_id=GW)
        asyncio.run(run_until(session, outbox, lambda: outbox.stats().depth == 0, 30))
        messages = fleet.wait_for(lambda ms: all(
            len(delivered(ms, d) | declared(ms, d)) >= produced[d] for d in devices), 10,
            "every seq delivered or declared")
    for device in devices:  # the fleet's proof, from what it received alone
        got, dropped = delivered(messages, device), declared(messages, device)
        assert got.isdisjoint(dropped)
        assert len(got) + len(dropped) == produced[device] == max(got | dropped)
    assert any(json.loads(m.payload)["state"] == "raised" for m in messages
               if m.topic.endswith("/alarm"))


def declared(messages: list[Received], device: str) -> set[int]:
    """Seqs of `device` the gateway declared dropped and that never arrived."""
    out: set[int] = set()
    for m in messages:
        topic = parse_topic(m.topic)
        if topic.channel == "drops" and topic.device == device:
            payload = parse_payload("drops", m.payload)
            assert isinstance(payload, DropsPayload) and m.qos == 1
            for first, last in payload.ranges:
                out.update(range(first, last + 1))
    return out - delivered(messages, device)




def test_qos0_and_retained_messages_take_the_fast_path_as_the_broker_expects(
        tmp_path: Path, broker: Broker) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox, \
            Subscriber(broker, f"edgefleet/v1/{GW}/#") as fleet:
        outbox.put(Message(f"edgefleet/v1/{GW}/event", {"v": 1, "n": 1}, "event", qos=0))
        outbox.put(Message(f"edgefleet/v1/{GW}/fire-1/state", {"v": 1, "online": True},
                           "state", device="fire-1", retain=True))
        session = session_via_broker(broker)
        asyncio.run(run_until(session, outbox, lambda: outbox.stats().depth == 0, 15))
        fleet.wait_for(lambda ms: any(m.topic.endswith("/event") for m in ms)
                       and any(m.topic.endswith("/state") for m in ms), 10, "both")
    with Subscriber(broker, f"edgefleet/v1/{GW}/+/state") as late:  # retained: still there
        [state] = late.wait_count(1)
        assert state.retain and json.loads(state.payload)["online"] is True


def session_via_broker(broker: Broker) -> MqttSession:
    return MqttSession(broker.host, broker.port, gateway_id=GW, backoff=Backoff(0.05, 0.5))
