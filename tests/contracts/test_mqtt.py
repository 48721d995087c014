"""The MQTT contract: topics both ways and payloads as a gateway writes them."""

from __future__ import annotations

import pytest

from contracts.mqtt import (
    AlarmPayload,
    ContractError,
    DropsPayload,
    TelemetryPayload,
    Topic,
    command_topic,
    device_topic,
    parse_payload,
    parse_topic,
    status_topic,
    subscription,
    valid_id,
)


@pytest.mark.parametrize(("topic", "parsed"), [
    ("edgefleet/v1/gw-q1/fire-3/telemetry", Topic("gw-q1", "telemetry", "fire-3")),
    ("edgefleet/v1/gw-q1/fire-3/alarm", Topic("gw-q1", "alarm", "fire-3")),
    ("edgefleet/v1/gw-q1/fire-3/drops", Topic("gw-q1", "drops", "fire-3")),
    ("edgefleet/v1/gw-q1/status", Topic("gw-q1", "status")),
    ("edgefleet/v1/gw-q1/ack", Topic("gw-q1", "ack")),
    ("edgefleet/v1/gw-q1/cmd/fire-3/reset", Topic("gw-q1", "cmd", "fire-3", "reset")),
])
def test_topics_parse_to_gateway_device_and_channel(topic: str, parsed: Topic) -> None:
    assert parse_topic(topic) == parsed


@pytest.mark.parametrize("topic", [
    "edgefleet/v2/gw/fire-3/telemetry", "edgefleet/v1/gw", "edgefleet/v1/gw/fire-3/telemetry/x",
    "edgefleet/v1/gw/fire-3/humidity", "edgefleet/v1/gw//telemetry", "edgefleet/v1/gw/cmd/x",
    "edgefleet/v1/gw/bogus",
])
def test_a_topic_outside_the_contract_is_refused_with_the_topic_named(topic: str) -> None:
    with pytest.raises(ContractError, match="topic"):
        parse_topic(topic)


def test_built_topics_parse_back() -> None:
    assert parse_topic(device_topic("g", "d", "state")) == Topic("g", "state", "d")
    assert parse_topic(status_topic("g")) == Topic("g", "status")
    assert parse_topic(command_topic("g", "d", "write")) == Topic("g", "cmd", "d", "write")
    assert subscription(share_group="fleet") == "$share/fleet/edgefleet/v1/#"
    assert subscription("g") == "edgefleet/v1/g/#"


@pytest.mark.parametrize(("ident", "ok"), [
    ("fire-b-3", True), ("a/b", False), ("a+", False), ("#", False), ("", False),
    ("status", False), ("cmd", False),
])
def test_ids_are_one_topic_level(ident: str, ok: bool) -> None:
    assert valid_id(ident) is ok


TELEMETRY = (b'{"v":1,"device":"fire-3","class":"fire","seq":7,"epoch":"e1f0","ts":'
             b'"2026-12-02T05:00:00.000Z","values":{"temp_c":31.5},"units":{"temp_c":"degC"}}')


def test_a_gateway_telemetry_payload_validates() -> None:
    msg = parse_payload("telemetry", TELEMETRY)
    assert isinstance(msg, TelemetryPayload)
    assert (msg.device, msg.device_class, msg.seq, msg.epoch) == ("fire-3", "fire", 7, "e1f0")
    assert msg.values == {"temp_c": 31.5}


@pytest.mark.parametrize(("payload", "where"), [
    (TELEMETRY.replace(b'"seq":7,', b""), "seq"),
    (TELEMETRY.replace(b'"seq":7', b'"seq":0'), "seq"),
    (TELEMETRY.replace(b'"epoch":"e1f0",', b""), "epoch"),
    (TELEMETRY.replace(b"05:00:00.000Z", b"05:00:00"), "ts"),  # no timezone
    (TELEMETRY.replace(b"31.5", b'"hot"'), "values"),
    (b"{not json", "payload"),
    (TELEMETRY.replace(b'"v":1', b'"v":2'), "v"),
])
def test_a_wrong_payload_names_the_field(payload: bytes, where: str) -> None:
    with pytest.raises(ContractError, match=where):
        parse_payload("telemetry", payload)


def test_alarm_and_drops_payloads() -> None:
    alarm = parse_payload("alarm", b'{"v":1,"device":"p1","class":"panel","seq":3,"epoch":"e",'
                          b'"ts":"2026-12-02T05:00:00Z","alarm_id":"p1:fire:z1:p2",'
                          b'"type":"fire","state":"cleared","zone":"1"}')
    assert isinstance(alarm, AlarmPayload)
    assert alarm.state == "cleared" and alarm.severity is None
    assert alarm.model_extra == {"zone": "1"}
    drops = parse_payload("drops", b'{"v":1,"device":"d","epoch":"e","ranges":[[4,9],[12,12]],'
                          b'"reason":"disk bound"}')
    assert isinstance(drops, DropsPayload)
    assert drops.ranges == [(4, 9), (12, 12)]
    with pytest.raises(ContractError, match="state"):
        parse_payload("alarm", alarm.model_dump_json(by_alias=True).replace("cleared", "gone"))
