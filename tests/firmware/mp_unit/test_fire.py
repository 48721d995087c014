# Fire detector driven through a fake HAL: what the fire-safety staff would see.
# ruff: noqa: I001  (mptest must be imported first: it puts firmware/ on sys.path)
import mptest
from fakes import Clock, FakeHal, ntc_counts, run_for, smoke_counts

from app.classes.fire import Fire
from app.regbank import RegBank, class_map

BITS = class_map("fire")["alarm_bits"]
FAULTS = class_map("fire")["fault_bits"]
approx = mptest.approx


def A(name):
    return 1 << BITS[name]


def F(name):
    return 1 << FAULTS[name]


def make(smoke=0.1, temp=22.0):
    hal = FakeHal()
    hal.counts["smoke"] = smoke_counts(smoke)
    hal.counts["heat"] = ntc_counts(temp)
    bank = RegBank("fire")
    fire = Fire(hal, bank)
    clock = Clock()
    run_for(fire, clock, 30)
    return hal, bank, fire, clock


def test_quiet_room_reads_normal():
    _hal, bank, fire, _clock = make()
    assert fire.alarm_bits == 0 and fire.fault_bits == 0, (fire.alarm_bits, fire.fault_bits)
    assert bank.get("fire_state") == 0 and not fire.latched
    assert approx(bank.get("temperature"), 22.0, 0.3), bank.get("temperature")
    assert approx(bank.get("smoke"), 0.1, 0.05), bank.get("smoke")
    assert abs(bank.get("heat_rise_rate")) < 0.5
    assert bank.get("smoke_raw") in (406, 407) and fire.errors == 0


def test_smoke_prealarm_does_not_latch():
    hal, bank, fire, clock = make()
    hal.counts["smoke"] = smoke_counts(2.6)
    run_for(fire, clock, 3)
    assert fire.alarm_bits == A("prealarm") and bank.get("fire_state") == 1
    assert not fire.latched
    hal.counts["smoke"] = smoke_counts(1.8)      # inside the 0.5 %/m hysteresis: holds
    run_for(fire, clock, 3)
    assert fire.alarm_bits == A("prealarm")
    hal.counts["smoke"] = smoke_counts(0.2)
    run_for(fire, clock, 3)
    assert fire.alarm_bits == 0 and bank.get("fire_state") == 0


def test_smoke_alarm_latches_until_reset():
    hal, bank, fire, clock = make()
    hal.counts["smoke"] = smoke_counts(5.0)
    run_for(fire, clock, 3)
    assert fire.alarm_bits & A("smoke") and fire.latched
    assert bank.get("fire_state") == 2
    hal.counts["smoke"] = smoke_counts(0.1)      # smoke cleared: alarm stays latched
    run_for(fire, clock, 10)
    assert fire.alarm_bits == A("smoke") and fire.latched and bank.get("fire_state") == 2
    fire.reset()
    run_for(fire, clock, 1)
    assert fire.alarm_bits == 0 and not fire.latched and bank.get("fire_state") == 0


def test_reset_while_smoke_persists_raises_again():
    hal, _bank, fire, clock = make()
    hal.counts["smoke"] = smoke_counts(6.0)
    run_for(fire, clock, 3)
    fire.reset()
    run_for(fire, clock, 1)
    assert fire.alarm_bits & A("smoke") and fire.latched


def test_single_smoke_spike_is_filtered():
    hal, _bank, fire, clock = make()
    hal.counts["smoke"] = smoke_counts(15.0)
    fire.sample(clock.tick())
    hal.counts["smoke"] = smoke_counts(0.1)
    run_for(fire, clock, 5)
    assert fire.alarm_bits == 0 and not fire.latched


def test_threshold_change_from_gateway_applies_at_next_sample():
    _hal, bank, fire, clock = make(smoke=1.5)
    assert fire.alarm_bits == 0
    bank.set_holding("smoke_alarm", 1.0)
    bank.set_holding("smoke_prealarm", 0.5)
    run_for(fire, clock, 2)
    assert fire.alarm_bits & A("smoke")


def test_fixed_heat_latches():
    hal, _bank, fire, clock = make(temp=40.0)
    hal.counts["heat"] = ntc_counts(60.0)
    run_for(fire, clock, 3)
    assert fire.alarm_bits & A("heat_fixed") and fire.latched
    hal.counts["heat"] = ntc_counts(25.0)
    run_for(fire, clock, 30)
    assert fire.alarm_bits & A("heat_fixed")
    fire.reset()
    run_for(fire, clock, 1)
    assert fire.alarm_bits == 0


def test_rate_of_rise_from_cold_room():
    # A1R: a 15 °C/min rise from 0 °C is caught by the rate element long before 58 °C
    hal, bank, fire, clock = make(temp=0.0)
    t0 = clock.now
    fired_at = None
    for _ in range(240):
        temp = (clock.now - t0) / 60000.0 * 15.0
        hal.counts["heat"] = ntc_counts(temp)
        fire.sample(clock.tick())
        if fired_at is None and fire.alarm_bits & A("heat_rise"):
            fired_at = temp
    assert fired_at is not None and fired_at < 20.0, fired_at
    assert not fire.alarm_bits & A("heat_fixed")
    assert approx(bank.get("heat_rise_rate"), 15.0, 1.0), bank.get("heat_rise_rate")
    assert fire.latched and bank.get("fire_state") == 2


def test_slow_warming_and_a_noisy_sample_do_not_trigger_rate_alarm():
    hal, bank, fire, clock = make(temp=20.0)
    t0 = clock.now
    for i in range(240):                  # 2 °C/min (sunlight, heating) plus one 8 °C spike
        temp = 20.0 + (clock.now - t0) / 60000.0 * 2.0
        if i == 150:
            temp += 8.0
        hal.counts["heat"] = ntc_counts(temp)
        fire.sample(clock.tick())
    assert fire.alarm_bits == 0, fire.alarm_bits
    assert approx(bank.get("heat_rise_rate"), 2.0, 0.5), bank.get("heat_rise_rate")


def test_open_smoke_input_is_a_fault_not_clean_air_nor_alarm():
    hal, bank, fire, clock = make()
    hal.counts["smoke"] = 0
    fire.sample(clock.tick())
    fire.sample(clock.tick())
    assert fire.fault_bits == 0          # not yet debounced (fault_debounce = 3)
    fire.sample(clock.tick())
    assert fire.fault_bits == F("smoke_open"), fire.fault_bits
    assert fire.alarm_bits == 0 and bank.get("fire_state") == 0
    assert bank.get("smoke") < -6        # the register shows the raw truth, never 0.0
    assert fire.errors >= 3
    hal.counts["smoke"] = smoke_counts(0.1)
    run_for(fire, clock, 3)
    assert fire.fault_bits == 0


def test_shorted_inputs_never_alarm():
    hal, _bank, fire, clock = make()
    hal.counts["smoke"] = 4095           # would decode as 61 %/m
    hal.counts["heat"] = 4095            # would decode as ~370 °C
    run_for(fire, clock, 5)
    assert fire.alarm_bits == 0 and not fire.latched
    assert fire.fault_bits == F("smoke_short") | F("heat_short"), fire.fault_bits


def test_open_thermistor_and_hot_out_of_physics():
    hal, _bank, fire, clock = make()
    hal.counts["heat"] = 0
    run_for(fire, clock, 2)
    assert fire.fault_bits == F("heat_open")
    hal.counts["heat"] = ntc_counts(-40.0)   # under the ADC floor: as open as a cut wire
    run_for(fire, clock, 2)
    assert fire.fault_bits == F("heat_open")
    hal.counts["heat"] = ntc_counts(170.0)   # below the short threshold, above 150 °C
    run_for(fire, clock, 2)
    assert fire.fault_bits == F("out_of_physics"), fire.fault_bits
    assert fire.alarm_bits == 0


def test_latched_alarm_survives_a_later_fault():
    hal, _bank, fire, clock = make()
    hal.counts["smoke"] = smoke_counts(8.0)
    run_for(fire, clock, 2)
    hal.counts["smoke"] = 0                  # chamber destroyed by the fire
    run_for(fire, clock, 3)
    assert fire.alarm_bits & A("smoke") and fire.fault_bits & F("smoke_open")


def test_stuck_adc_reported_without_hiding_alarms():
    hal, _bank, fire, clock = make()
    hal.dither = False
    run_for(fire, clock, 130)
    assert fire.fault_bits == F("stuck"), fire.fault_bits
    hal.dither = True
    run_for(fire, clock, 1)
    assert fire.fault_bits == 0


def test_hal_exception_never_escapes():
    hal, _bank, fire, clock = make()
    before = fire.errors
    hal.counts["heat"] = OSError(5)
    run_for(fire, clock, 3)
    assert fire.errors >= before + 3
    assert fire.fault_bits == F("heat_open")
    assert fire.alarm_bits == 0


def sample_as_the_node_does(fire, clock, ms, period=500):
    """Sample for `ms` the way the node loop does: each wait is what period_ms() asks for.
    Returns the sample times (ms after the start) at which the smoke alarm was latched."""
    start, latched_at = clock.now, []
    while clock.now - start < ms:
        now = clock.tick(fire.period_ms(period))
        fire.hal.now = now
        fire.sample(now)
        if fire.alarm_bits & A("smoke"):
            latched_at.append(now - start)
    return latched_at


def test_smoke_past_the_alarm_threshold_latches_within_one_period_and_two_fast_samples():
    # At the default 500 ms period the 5-sample median alone took 1.0-1.5 s: the samples that
    # confirm a suspect reading now come every confirm_ms (100 ms)
    hal, _bank, fire, clock = make()
    assert fire.period_ms(500) == 500            # clean air: the configured period
    hal.counts["smoke"] = smoke_counts(5.0)      # smoke arrives just after a sample
    latched = sample_as_the_node_does(fire, clock, 2000)
    assert latched and latched[0] <= 500 + 2 * 100, latched
    assert fire.period_ms(500) == 500            # latched: nothing left to confirm


def test_a_spike_speeds_sampling_up_but_never_alarms_and_sampling_slows_again():
    hal, _bank, fire, clock = make()
    for spikes in (1, 2):                        # an insect, a dust grain; two in a row
        for _ in range(spikes):
            hal.counts["smoke"] = smoke_counts(15.0)
            fire.sample(clock.tick(fire.period_ms(500)))
            assert fire.period_ms(500) == 100    # suspect: confirm at once
        hal.counts["smoke"] = smoke_counts(0.1)
        assert not sample_as_the_node_does(fire, clock, 3000)
        assert fire.period_ms(500) == 500 and not fire.latched and fire.alarm_bits == 0


def test_pre_alarm_smoke_is_watched_closely_and_a_faster_period_is_kept():
    hal, _bank, fire, clock = make()
    hal.counts["smoke"] = smoke_counts(2.5)      # above the 2 %/m pre-alarm, below 4
    sample_as_the_node_does(fire, clock, 1000)
    assert fire.alarm_bits == A("prealarm") and fire.period_ms(500) == 100
    assert fire.period_ms(50) == 50              # a commissioned faster period stays


def test_heat_past_the_fixed_threshold_is_confirmed_at_the_fast_period():
    hal, _bank, fire, clock = make(temp=40.0)
    hal.counts["heat"] = ntc_counts(62.0)
    start = clock.now
    while not fire.alarm_bits & A("heat_fixed"):
        fire.sample(clock.tick(fire.period_ms(500)))
    assert clock.now - start <= 500 + 100, clock.now - start


mptest.run(globals())
