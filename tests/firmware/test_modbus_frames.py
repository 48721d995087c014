"""Byte vectors for the node's Modbus RTU slave (firmware/app/modbus.py), pure and fast.

The same module runs on the device; tests/bus exercises it there, under the MicroPython port.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def fw(firmware_path: Path) -> Any:
    from app import modbus, regbank

    class FW:
        pass

    ns = FW()
    ns.modbus = modbus  # type: ignore[attr-defined]
    ns.regbank = regbank  # type: ignore[attr-defined]
    return ns


def frame(hexstr: str, fw: Any) -> bytearray:
    body = bytes.fromhex(hexstr)
    crc = fw.modbus.crc16(body)
    return bytearray(body + bytes([crc & 0xFF, crc >> 8]))


def ask(slave: Any, req: bytearray) -> bytes | None:
    reply = slave.handle(req, len(req))
    return None if reply is None else bytes(reply)


def make_slave(fw: Any, cls: str = "fire", address: int = 7) -> Any:
    bank = fw.regbank.RegBank(cls)
    writes: list[tuple[str, int, int]] = []
    slave = fw.modbus.Slave(address, bank, lambda *a: writes.append(a))
    slave.writes = writes
    return slave


def test_crc_matches_the_specification_example(fw: Any) -> None:
    # Modbus over serial line spec / every vendor manual: 01 03 00 00 00 0A -> CRC C5 CD
    assert bytes(frame("01030000000A", fw))[-2:] == bytes.fromhex("C5CD")


def test_read_holding_registers_answers_defaults(fw: Any) -> None:
    slave = make_slave(fw)
    reply = ask(slave, frame("0703000F0003", fw))  # registers 15..17
    # 15 is unassigned (0), 16 smoke_alarm 4.00 %/m = 400, 17 pre-alarm 2.00 = 200
    assert reply == bytes(frame("0703060000019000C8", fw))
    assert slave.frames_ok == 1


def test_read_input_registers_big_endian_words(fw: Any) -> None:
    slave = make_slave(fw)
    slave.bank.set("temperature", -5.5)
    slave.bank.set("uptime", 70000)
    reply = ask(slave, frame("070400060002", fw))
    assert reply[3:7] == bytes.fromhex("00011170")
    reply = ask(slave, frame("070400110001", fw))
    assert reply[3:5] == (-55 & 0xFFFF).to_bytes(2, "big")


def test_unknown_function_is_exception_01(fw: Any) -> None:
    slave = make_slave(fw)
    assert ask(slave, frame("07080000A537", fw)) == bytes(frame("078801", fw))
    assert slave.exceptions == 1


def test_read_past_the_map_is_exception_02(fw: Any) -> None:
    slave = make_slave(fw)
    assert ask(slave, frame("070400000064", fw)) == bytes(frame("078402", fw))


def test_bad_quantity_is_exception_03(fw: Any) -> None:
    slave = make_slave(fw)
    assert ask(slave, frame("070300000000", fw)) == bytes(frame("078303", fw))
    assert ask(slave, frame("07030000007E", fw)) == bytes(frame("078303", fw))


def test_threshold_outside_its_range_is_exception_03_and_not_applied(fw: Any) -> None:
    slave = make_slave(fw)
    assert ask(slave, frame("070600102710", fw)) == bytes(frame("078603", fw))  # 100.00 %/m
    assert slave.bank.threshold("smoke_alarm") == 4.0
    assert slave.writes == []


def test_write_single_register_echoes_and_notifies(fw: Any) -> None:
    slave = make_slave(fw)
    req = frame("07060010015E", fw)  # smoke_alarm = 3.50 %/m
    assert ask(slave, req) == bytes(req)
    assert slave.bank.threshold("smoke_alarm") == 3.5
    assert slave.writes == [("holding", 16, 1)]


def test_write_multiple_registers(fw: Any) -> None:
    slave = make_slave(fw)
    reply = ask(slave, frame("07100010000204015E00C8", fw))
    assert reply == bytes(frame("071000100002", fw))
    assert slave.bank.threshold("smoke_alarm") == 3.5
    assert slave.bank.threshold("smoke_prealarm") == 2.0
    # byte count disagreeing with the quantity
    assert ask(slave, frame("07100010000203015E00", fw)) == bytes(frame("079003", fw))


def test_coils_write_and_read(fw: Any) -> None:
    slave = make_slave(fw)
    req = frame("07050000FF00", fw)
    assert ask(slave, req) == bytes(req)
    assert ask(slave, frame("070100000001", fw)) == bytes(frame("07010101", fw))
    assert ask(slave, frame("070500001234", fw)) == bytes(frame("078503", fw))
    assert ask(slave, frame("070F0000000101 00".replace(" ", ""), fw)) == bytes(
        frame("070F00000001", fw))
    assert slave.bank.coils[0] == 0


def test_broadcast_write_is_applied_without_reply(fw: Any) -> None:
    slave = make_slave(fw)
    assert ask(slave, frame("00060010015E", fw)) is None
    assert slave.bank.threshold("smoke_alarm") == 3.5
    assert ask(slave, frame("000300000001", fw)) is None  # broadcast reads are meaningless


def test_other_addresses_and_bad_crc_stay_silent(fw: Any) -> None:
    slave = make_slave(fw)
    assert ask(slave, frame("080300000001", fw)) is None
    bad = frame("070300000001", fw)
    bad[-1] ^= 0xFF
    assert ask(slave, bad) is None
    assert slave.crc_errors == 1
    assert ask(slave, bytearray(b"\x07\x03")) is None  # shorter than any frame


def test_truncated_frames_with_valid_crc_get_exception_03(fw: Any) -> None:
    slave = make_slave(fw)
    assert ask(slave, frame("07030000", fw)) == bytes(frame("078303", fw))
    assert ask(slave, frame("0706", fw)) == bytes(frame("078603", fw))


def test_a_failing_write_handler_is_device_failure_04(fw: Any) -> None:
    bank = fw.regbank.RegBank("flood")

    def broken_flash(*_: object) -> None:
        raise OSError(28, "No space left on device")

    slave = fw.modbus.Slave(3, bank, broken_flash)
    assert ask(slave, frame("03060010001E", fw)) == bytes(frame("038604", fw))
