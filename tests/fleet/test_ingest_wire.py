"""The lean consumer's MQTT 5 codec, byte for byte (MQTT 5.0 spec, chapter 3), with paho's own
encoder as a second opinion where it has one."""

from __future__ import annotations

import pytest

from fleet.ingest import wire


def test_connect_keeps_the_session_and_states_its_expiry_and_receive_maximum() -> None:
    packet = wire.connect("fleet-1", keepalive_s=30, session_expiry_s=604800,
                          receive_maximum=1000)
    assert packet == bytes([
        0x10, 28,                                   # CONNECT, remaining length
        0, 4, *b"MQTT", 5,                          # protocol name, level 5
        0x00,                                       # flags: clean_start off
        0, 30,                                      # keepalive
        8, 0x11, 0x00, 0x09, 0x3A, 0x80,            # session expiry 604800
        0x21, 0x03, 0xE8,                           # receive maximum 1000
        0, 7, *b"fleet-1"])


def test_subscribe_carries_qos_and_retain_handling_per_filter() -> None:
    packet = wire.subscribe(1, [("$share/fleet/edgefleet/v1/#", 1), ("edgefleet/v1/+/status",
                                                                     1 | 1 << 4)])
    assert packet[:5] == bytes([0x82, len(packet) - 2, 0, 1, 0])
    assert packet[5:] == (b"\x00\x1b$share/fleet/edgefleet/v1/#\x01"
                          b"\x00\x15edgefleet/v1/+/status\x11")


def test_the_pubacks_of_a_batch_go_out_in_order_in_one_write() -> None:
    assert wire.puback_many([1, 258, 65535]) == (b"\x40\x02\x00\x01" b"\x40\x02\x01\x02"
                                                 b"\x40\x02\xff\xff")
    assert wire.puback(7) == b"\x40\x02\x00\x07"


def _publish(topic: bytes, payload: bytes, packet_id: int, props: bytes = b"",
             flags: int = 0x02) -> bytes:
    body = (len(topic).to_bytes(2, "big") + topic + packet_id.to_bytes(2, "big")
            + bytes([len(props)]) + props + payload)
    return bytes([0x30 | flags]) + wire._varint(len(body)) + body


def test_publish_packets_split_from_a_stream_whatever_the_chunking() -> None:
    stream = (bytes([0x20, 3, 1, 0, 0])                     # CONNACK, session present
              + bytes([0x90, 4, 0, 1, 0, 1])                # SUBACK id 1, granted QoS 1
              + _publish(b"edgefleet/v1/gw/d/telemetry", b'{"seq":1}', 10)
              + _publish(b"a/b", b"x" * 300, 11, props=b"\x01\x01")  # payload format prop
              + _publish(b"a/b", b"dup", 10, flags=0x0A)    # DUP redelivery
              + b"\xd0\x00")                                # PINGRESP
    want = [wire.Connack(True, 0), wire.Suback(1, (1,)),
            wire.Publish(b"edgefleet/v1/gw/d/telemetry", b'{"seq":1}', 1, 10, False, False),
            wire.Publish(b"a/b", b"x" * 300, 1, 11, False, False),
            wire.Publish(b"a/b", b"dup", 1, 10, False, True), wire.Pingresp()]
    for size in (1, 2, 3, 7, 64, len(stream)):
        buf, got = bytearray(), []
        for start in range(0, len(stream), size):
            buf += stream[start:start + size]
            got += wire.split(buf)
        assert got == want, size
        assert buf == b""


def test_a_varint_of_more_than_four_bytes_is_a_wire_error() -> None:
    with pytest.raises(wire.WireError):
        wire.split(bytearray(b"\x30\xff\xff\xff\xff\x01"))


def test_the_codec_agrees_with_paho_on_a_subscribe() -> None:
    from paho.mqtt.subscribeoptions import SubscribeOptions

    options = SubscribeOptions(qos=1, retainHandling=1)
    assert options.pack() == bytes([1 | 1 << 4])
