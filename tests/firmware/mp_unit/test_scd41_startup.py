# The SCD41 as its datasheet describes it (scd41_chip, the unit tests' stand-in;
# the simulator's is hardware/sim/scd41.py) and the
# air node's start-up and recovery against it: a real SCD41 powers up idle and NACKs
# read_measurement until start_periodic_measurement; data is ready every 5 s.
# ruff: noqa: I001  (mptest must be imported first: it puts firmware/ on sys.path)
import mptest
from fakes import Clock, FakeHal, run_for, scd41_response

from app.classes.air import Air
from app.drivers import scd41
import scd41_chip as chip_mod
from fakes import CountingChip as Scd41Chip
from app.regbank import RegBank, class_map

FAULTS = class_map("air")["fault_bits"]
START = 0x21B1
STOP = 0x3F86


def nacks(fn, *args):
    try:
        fn(*args)
    except OSError:
        return True
    return False


def read(chip, now, cmd, n):
    chip.write(now, cmd)
    return chip.read(now + 1, n)


# -- the chip stand-in follows the datasheet --------------------------------------------------

def test_a_powered_up_chip_is_idle_and_nacks_read_measurement():
    chip = Scd41Chip(0)
    chip.source = scd41_response(600, 25.0, 50.0)
    assert nacks(chip.write, 10, START)                        # power-up time: deaf
    assert nacks(read, chip, 100, scd41.READ_MEASUREMENT, 9)   # idle: no data, NACK
    ready = read(chip, 100, scd41.GET_DATA_READY, 3)
    assert scd41.word(ready, 0) & 0x7FF == 0


def test_started_chip_has_data_every_five_seconds_read_once():
    chip = Scd41Chip(0)
    chip.source = scd41_response(600, 25.0, 50.0)
    chip.write(100, START)
    assert nacks(chip.write, 200, START)                       # not while measuring
    assert scd41.word(read(chip, 5000, scd41.GET_DATA_READY, 3), 0) & 0x7FF == 0
    assert scd41.word(read(chip, 5100, scd41.GET_DATA_READY, 3), 0) & 0x7FF != 0
    assert scd41.decode(read(chip, 5200, scd41.READ_MEASUREMENT, 9))[0] == 600
    assert nacks(read, chip, 5300, scd41.READ_MEASUREMENT, 9)  # buffer emptied upon read-out
    assert scd41.decode(read(chip, 10100, scd41.READ_MEASUREMENT, 9))[0] == 600


def test_stop_makes_the_chip_deaf_for_500_ms_and_idle():
    chip = Scd41Chip(0)
    chip.source = scd41_response(600, 25.0, 50.0)
    chip.write(100, START)
    chip.write(6000, STOP)
    assert nacks(chip.write, 6499, START)
    chip.write(6500, START)
    assert chip.mode == chip_mod.PERIODIC


def test_read_before_the_execution_time_nacks():
    chip = Scd41Chip(0)
    chip.source = scd41_response(600, 25.0, 50.0)
    chip.write(100, scd41.GET_DATA_READY)
    assert nacks(chip.read, 100, 3)


# -- the air node against it -------------------------------------------------------------------

def make_air(co2=650):
    hal = FakeHal()
    hal.i2c_reply = scd41_response(co2, 23.0, 55.0)
    bank = RegBank("air")
    air = Air(hal, bank)
    return hal, bank, air, Clock()


def test_air_node_starts_the_scd41_before_it_reads_co2():
    hal, bank, air, clock = make_air(co2=812)
    run_for(air, clock, 3)
    assert hal.scd.commands.get(START) == 1, hal.scd.commands
    assert hal.scd.mode == chip_mod.PERIODIC
    assert air.co2 is None                          # no measurement yet: started < 5 s ago
    run_for(air, clock, 5)
    assert air.co2 == 812 and bank.get("co2") == 812
    assert not air.fault_bits & (1 << FAULTS["scd_fault"]), air.fault_bits
    run_for(air, clock, 30)
    reads = hal.i2c_calls
    assert 6 <= reads <= 8, reads                   # one read per 5 s measurement
    assert air.scd.restarts == 1


def test_air_node_recovers_a_power_cycled_scd41():
    hal, bank, air, clock = make_air(co2=650)
    run_for(air, clock, 12)
    assert bank.get("co2") == 650
    hal.scd.power_on(clock.now)                     # a brown-out: the sensor is idle again
    hal.i2c_reply = scd41_response(1234, 23.0, 55.0)
    run_for(air, clock, 25)
    assert hal.scd.commands.get(START) == 2, hal.scd.commands    # restarted once
    assert bank.get("co2") == 1234
    run_for(air, clock, 20)
    assert not air.fault_bits & (1 << FAULTS["scd_fault"]), air.fault_bits


def test_mcu_reset_with_the_sensor_still_measuring_stops_it_first():
    hal, _bank, air, clock = make_air(co2=700)
    run_for(air, clock, 12)
    assert hal.scd.mode == chip_mod.PERIODIC
    air2 = Air(hal, RegBank("air"))                 # the MCU rebooted, the sensor did not
    run_for(air2, clock, 8)
    assert air2.co2 == 700, (air2.co2, hal.scd.commands)


def test_a_nack_streak_restarts_the_sensor():
    hal, bank, air, clock = make_air(co2=650)
    run_for(air, clock, 12)
    hal.i2c_reply = OSError(19)                     # off the bus for 7 s: NACK after NACK
    run_for(air, clock, 7)
    assert air.scd.restarts >= 2                    # the driver gave up on it and restarts
    hal.scd.power_on(clock.now)                     # it lost its supply meanwhile
    hal.i2c_reply = scd41_response(999, 23.0, 55.0)
    run_for(air, clock, 8)
    assert hal.scd.commands.get(START) == 2, hal.scd.commands
    assert bank.get("co2") == 999


mptest.run(globals())
