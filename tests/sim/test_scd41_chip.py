"""The simulator's SCD41 (hardware/sim/scd41.py) follows the SCD4x datasheet, table by table:
it is what a simulated air node's I2C transfers meet, so a driver that skips
start_periodic_measurement, reads too early or ignores the stop's 500 ms must fail against it."""

from __future__ import annotations

import pytest

from hardware.sim import encoders as enc
from hardware.sim.scd41 import (
    GET_DATA_READY,
    NOT_READY,
    READ_MEASUREMENT,
    READY,
    START_PERIODIC,
    STOP_PERIODIC,
    I2cBus,
    Nack,
    Scd41Chip,
    crc8,
)

MEASUREMENT = enc.scd41_response(600.0, 21.0, 45.0)


def _chip(now: float = 0.0) -> Scd41Chip:
    chip = Scd41Chip(now)
    chip.source = MEASUREMENT
    return chip


def _read(chip: Scd41Chip, now: float, cmd: int, n: int) -> bytes:
    chip.write(now, cmd)
    return chip.read(now + 1.0, n)


def test_sensirion_crc_check_vector() -> None:
    assert crc8(b"\xbe\xef") == 0x92
    assert READY[2] == crc8(READY[:2]) and NOT_READY[2] == crc8(NOT_READY[:2])


def test_a_powered_up_chip_is_deaf_30_ms_then_idle_and_nacks_read_measurement() -> None:
    chip = _chip()
    with pytest.raises(Nack):
        chip.write(10.0, STOP_PERIODIC)
    with pytest.raises(Nack):
        _read(chip, 100.0, READ_MEASUREMENT, 9)
    assert _read(chip, 100.0, GET_DATA_READY, 3) == NOT_READY


def test_data_every_5_s_after_start_and_the_buffer_is_emptied_on_read_out() -> None:
    chip = _chip()
    chip.write(100.0, START_PERIODIC)
    assert _read(chip, 5000.0, GET_DATA_READY, 3) == NOT_READY     # 4.9 s: not yet
    assert _read(chip, 5100.0, GET_DATA_READY, 3) == READY
    assert _read(chip, 5110.0, READ_MEASUREMENT, 9) == MEASUREMENT
    with pytest.raises(Nack):
        _read(chip, 5120.0, READ_MEASUREMENT, 9)                   # emptied upon read-out
    assert _read(chip, 10100.0, READ_MEASUREMENT, 9) == MEASUREMENT


def test_start_while_measuring_nacks_and_stop_leaves_the_chip_deaf_500_ms() -> None:
    chip = _chip()
    chip.write(100.0, START_PERIODIC)
    with pytest.raises(Nack):
        chip.write(200.0, START_PERIODIC)
    chip.write(300.0, STOP_PERIODIC)
    with pytest.raises(Nack):
        chip.write(799.0, START_PERIODIC)
    chip.write(800.0, START_PERIODIC)


def test_a_read_before_the_1_ms_execution_time_nacks() -> None:
    chip = _chip()
    chip.write(100.0, GET_DATA_READY)
    with pytest.raises(Nack):
        chip.read(100.5, 3)


def test_the_bus_answers_transfers_and_a_power_cycle_puts_the_chip_back_in_idle() -> None:
    bus = I2cBus()
    assert bus.transfer(0x62, START_PERIODIC, 0, 0.0) is None      # nothing on the bus yet
    bus.feed({"i2c": {"98": MEASUREMENT.hex()}, "power": {"98": 0}}, 0.0)
    assert bus.transfer(0x62, START_PERIODIC, 0, 100.0) == b""
    assert bus.transfer(0x62, GET_DATA_READY, 0, 5200.0) == b""
    assert bus.transfer(0x62, GET_DATA_READY, 3, 5201.0) == READY
    bus.feed({"i2c": {"98": MEASUREMENT.hex()}, "power": {"98": 1}}, 5300.0)   # brown-out
    assert bus.transfer(0x62, READ_MEASUREMENT, 0, 5400.0) == b""
    assert bus.transfer(0x62, READ_MEASUREMENT, 9, 5401.0) is None  # idle again: no data
    assert bus.transfer(0x62, START_PERIODIC, 0, 5402.0) == b""     # and it can be started
    bus.feed({"i2c": {}}, 5500.0)                                   # a cut wire
    assert bus.transfer(0x62, STOP_PERIODIC, 0, 5600.0) is None


def test_a_late_read_request_keeps_the_nodes_1_ms_between_command_and_read_out() -> None:
    # The node sends a read command at its t=1000 and the read-out 1 ms later; the simulator
    # reads the command 30 ms late (a busy thread) and the read-out 0.2 ms after it. Timed by
    # arrival the chip would NACK (0.2 ms < 1 ms execution time); timed by the node, it answers.
    bus = I2cBus()
    bus.feed({"i2c": {"98": MEASUREMENT.hex()}, "power": {"98": 0}}, 0.0)
    bus.chip_time(0.0, 100.0)                                       # node clock 0 = sim 100
    assert bus.transfer(0x62, GET_DATA_READY, 0, bus.chip_time(1000.0, 1130.0)) == b""
    assert bus.transfer(0x62, GET_DATA_READY, 3, bus.chip_time(1001.0, 1130.2)) == NOT_READY
