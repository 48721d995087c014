"""Virtual sensors: the physical world of one node, and the raw feed its firmware reads.

This module owns the simulated physics (a room on fire, a street filling with rain, a water main,
a roadside air station), their noise, and the fault injection every class supports. A sensor is
a small state machine advanced by :meth:`VirtualSensor.step`; :meth:`VirtualSensor.snapshot`
renders it into the raw-feed contract of a simulated node (:class:`hardware.sim.simbus.NodeProcess`
passes "adc" and "uart" on to the firmware's unix HAL and keeps "i2c"/"power" for the chip
models that answer the node's I2C transfers)::

    {"adc": {channel: counts}, "uart": {"pms": "<hex since last snapshot>"},
     "i2c": {"98": "<hex of the 9 bytes an SCD41 measurement would give now>"},
     "power": {"98": <supply cycles of that chip>}}

ADC counts are what the ESP32's calibrated ``read_uv()`` gives (encoders.esp32_counts_exact),
not an ideal converter. The I2C entry is the air the SCD41 measures, not its answer: the chip's
command state machine (idle at power-up, NACK until started, data every 5 s) is synchronous
with the firmware's transfers; it runs on the simulator's side of the node's I2C channel
(hardware/sim/scd41.py), never in the node process, as a board's MCU never carries it; an
address missing from "i2c" does not acknowledge, and a new "power" count is a power cycle,
after which the chip is idle until the firmware starts it again.

and :meth:`VirtualSensor.truth` gives the noiseless engineering values (register names) that
tests and displays compare the firmware against. Scenario events arrive through
:meth:`VirtualSensor.apply`; every action and its parameters are declared in the class's
``ACTIONS`` table so scenario files can be checked before anything runs.

Time in the scenarios is compressed (a storm in three minutes), so the rate constants below are
faster than a real street or pipe network; the shapes (t-squared fire growth, well-mixed smoke,
orifice drainage, first-order chlorine decay) are the textbook ones.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from hardware.regmap import load_maps
from hardware.sim import encoders as enc

__all__ = [
    "FAULT_KINDS",
    "SENSOR_CLASSES",
    "AirSensor",
    "FireSensor",
    "FloodSensor",
    "Param",
    "VirtualSensor",
    "WaterSensor",
    "make_sensor",
    "validate_action",
]

ParamValue = float | str
FAULT_KINDS = ("open", "short", "stuck", "noise", "nack", "checksum", "clear")

# Transmitters saturate inside the NAMUR NE 43 measuring range (3.8-20.5 mA) when the measured
# value leaves their span; only a real fault drives the loop outside it.
_LOOP_SAT_LOW_MA = 3.8
_LOOP_SAT_HIGH_MA = 20.5
_ADC_NOISE_COUNTS = 0.8       # ESP32 ADC1 after calibration and 8x oversampling, 1 sigma
# Every ADC channel goes through the ESP32 converter model (encoders.esp32_counts_exact): the
# firmware sees read_uv() of the pin voltage, with its dead zone and its upper nonlinearity.
_FAULT_NOISE_COUNTS = 150.0   # an EMI-hit or corroded input, 1 sigma, plus rail spikes


@dataclass(frozen=True)
class Param:
    """One parameter of a scenario action."""

    kind: Literal["number", "text"] = "number"
    default: ParamValue | None = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""


_FAULT_ACTION: dict[str, Param] = {
    "kind": Param("text", required=True, choices=FAULT_KINDS, doc="what breaks"),
    "channel": Param("text", doc="adc channel, 'pms' or '98' (alias 'scd41'); default: all"),
    "amplitude": Param("number", default=_FAULT_NOISE_COUNTS, minimum=0.0, maximum=4095.0,
                       doc="noise fault: 1-sigma counts on ADC channels"),
}


def _loop_counts_saturated(ma: float) -> float:
    """Loop current -> fractional ADC counts (noise is added before rounding)."""
    ma = min(_LOOP_SAT_HIGH_MA, max(_LOOP_SAT_LOW_MA, ma))
    return enc.esp32_counts_exact(enc.loop_volts(ma))


def _relax(value: float, target: float, tau_s: float, dt_s: float) -> float:
    """Exact first-order step toward ``target``: stable for any dt."""
    if tau_s <= 0:
        return target
    return target + (value - target) * math.exp(-dt_s / tau_s)


class VirtualSensor:
    """Base of every virtual sensor: time, seeded noise, fault injection, action dispatch."""

    class_name: ClassVar[str] = ""
    ADC_CHANNELS: ClassVar[tuple[str, ...]] = ()
    UART_CHANNELS: ClassVar[tuple[str, ...]] = ()
    I2C_CHANNELS: ClassVar[tuple[str, ...]] = ()
    ACTIONS: ClassVar[dict[str, dict[str, Param]]] = {"fault": _FAULT_ACTION}
    # Internal integration step; callers may step with any dt (the scenarios use up to 0.5 s).
    SUBSTEP_S: ClassVar[float] = 0.1

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.t = 0.0
        self.faults: dict[str, str] = {}
        self._frozen: dict[str, Any] = {}
        self._noise_amplitude: dict[str, float] = {}

    # ------------------------------------------------------------------ public API

    @classmethod
    def channels(cls) -> tuple[str, ...]:
        return cls.ADC_CHANNELS + cls.UART_CHANNELS + cls.I2C_CHANNELS

    @classmethod
    def validate(cls, action: str, params: Mapping[str, object]) -> dict[str, ParamValue]:
        """Check one action against the class's table; return params with defaults filled in.

        Raises ValueError naming the offending field (``action`` or ``params.<name>``).
        """
        spec = cls.ACTIONS.get(action)
        if spec is None:
            known = ", ".join(sorted(cls.ACTIONS))
            raise ValueError(f"action {action!r} is not a {cls.class_name} action "
                             f"(known: {known})")
        unknown = sorted(set(params) - set(spec))
        if unknown:
            known = ", ".join(sorted(spec)) or "none"
            raise ValueError(f"params.{unknown[0]} is not a parameter of {cls.class_name} "
                             f"action {action!r} (known: {known})")
        out: dict[str, ParamValue] = {}
        for name, p in spec.items():
            if name not in params:
                if p.required:
                    raise ValueError(f"params.{name} is required by {cls.class_name} "
                                     f"action {action!r}")
                if p.default is not None:
                    out[name] = p.default
                continue
            out[name] = _check_param(name, p, params[name])
        if action == "fault":
            cls._check_fault(out)
        return out

    def apply(self, action: str, params: Mapping[str, object] | None = None) -> None:
        """Apply a scenario event (validated first; ValueError when it does not fit)."""
        checked = self.validate(action, params or {})
        handler: Callable[[dict[str, ParamValue]], None] = getattr(self, f"_on_{action}")
        handler(checked)

    def step(self, dt_s: float) -> None:
        """Advance the physics by ``dt_s`` simulated seconds (in internal sub-steps)."""
        if not math.isfinite(dt_s) or dt_s < 0:
            raise ValueError(f"dt_s must be a finite, non-negative number of seconds: {dt_s}")
        remaining = dt_s
        while remaining > 1e-9:
            h = min(self.SUBSTEP_S, remaining)
            self._evolve(h)
            self.t += h
            self._after_substep()
            remaining -= h

    def snapshot(self) -> dict[str, Any]:
        """The raw feed now. UART bytes are drained: each snapshot carries only the new ones."""
        adc = {ch: self._faulted_counts(ch, counts) for ch, counts in self._adc_counts().items()}
        return {"adc": adc, "uart": self._uart_feed(), "i2c": self._i2c_feed(),
                "power": self._power_feed()}

    def truth(self) -> dict[str, float]:
        """Noiseless engineering values (register names and units) for displays and tests."""
        raise NotImplementedError

    # ------------------------------------------------------------------ subclass hooks

    def _evolve(self, dt_s: float) -> None:
        raise NotImplementedError

    def _after_substep(self) -> None:
        """Called after each sub-step once ``self.t`` has advanced (UART emitters use it)."""

    def _adc_counts(self) -> dict[str, float]:
        """Noisy, unrounded counts per ADC channel before faults."""
        return {}

    def _uart_feed(self) -> dict[str, str]:
        return {}

    def _i2c_feed(self) -> dict[str, str]:
        return {}

    def _power_feed(self) -> dict[str, int]:
        return {}

    def _freeze(self, channel: str) -> Any:
        """The exact raw value a 'stuck' fault holds ``channel`` at."""
        return self._faulted_counts_clean(self._adc_counts()[channel])

    # ------------------------------------------------------------------ faults

    @classmethod
    def _check_fault(cls, params: dict[str, ParamValue]) -> None:
        channel = params.get("channel")
        if channel is None:
            return
        channel = "98" if channel == "scd41" else str(channel)
        params["channel"] = channel
        if channel not in cls.channels():
            known = ", ".join(cls.channels())
            raise ValueError(f"params.channel {channel!r} is not a {cls.class_name} channel "
                             f"(known: {known})")
        kind = params["kind"]
        if kind == "nack" and channel not in cls.I2C_CHANNELS:
            raise ValueError(f"params.kind 'nack' applies to an I2C device, not {channel!r}")
        if kind == "checksum" and channel in cls.ADC_CHANNELS:
            raise ValueError(f"params.kind 'checksum' applies to a UART or I2C channel, "
                             f"not the analogue input {channel!r}")

    def _default_fault_channels(self, kind: str) -> tuple[str, ...]:
        if kind == "nack":
            return self.I2C_CHANNELS
        if kind == "checksum":
            return self.UART_CHANNELS
        return self.channels()

    def _on_fault(self, params: dict[str, ParamValue]) -> None:
        kind = str(params["kind"])
        channel = params.get("channel")
        targets = (str(channel),) if channel is not None else self._default_fault_channels(kind)
        for ch in targets:
            self.faults.pop(ch, None)
            self._frozen.pop(ch, None)
            self._noise_amplitude.pop(ch, None)
            if kind == "clear":
                continue
            if kind == "stuck":
                self._frozen[ch] = self._freeze(ch)
            if kind == "noise":
                self._noise_amplitude[ch] = float(params["amplitude"])
            self.faults[ch] = kind

    @staticmethod
    def _faulted_counts_clean(counts: float) -> int:
        return max(0, min(enc.ADC_MAX, round(counts)))

    def _faulted_counts(self, channel: str, counts: float) -> int:
        kind = self.faults.get(channel)
        if kind is None:
            return self._faulted_counts_clean(counts)
        if kind == "open":       # nothing drives the pin: the converter's floor (read_uv offset)
            return self._faulted_counts_clean(enc.esp32_counts_exact(0.0))
        if kind == "short":
            return enc.ADC_MAX
        if kind == "stuck":
            return int(self._frozen[channel])
        if kind == "noise":
            amp = self._noise_amplitude.get(channel, _FAULT_NOISE_COUNTS)
            noisy = counts + self.rng.gauss(0.0, amp)
            if self.rng.random() < 0.05:     # an occasional spike to a rail
                noisy = self.rng.choice((0.0, float(enc.ADC_MAX)))
            return self._faulted_counts_clean(noisy)
        return self._faulted_counts_clean(counts)

    def _adc_noise(self) -> float:
        return self.rng.gauss(0.0, _ADC_NOISE_COUNTS)


def _check_param(name: str, p: Param, value: object) -> ParamValue:
    if p.kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"params.{name} must be a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"params.{name} must be finite, got {value!r}")
        if p.minimum is not None and number < p.minimum:
            raise ValueError(f"params.{name} = {number:g} is below its minimum {p.minimum:g}")
        if p.maximum is not None and number > p.maximum:
            raise ValueError(f"params.{name} = {number:g} is above its maximum {p.maximum:g}")
        return number
    if not isinstance(value, str):
        raise ValueError(f"params.{name} must be a string, got {value!r}")
    if p.choices and value not in p.choices:
        raise ValueError(f"params.{name} = {value!r} is not one of {', '.join(p.choices)}")
    return value


def _actions(**extra: dict[str, Param]) -> dict[str, dict[str, Param]]:
    return {"fault": _FAULT_ACTION, **extra}


# =========================================================================== fire


class FireSensor(VirtualSensor):
    """A 30 m² office room, 3 m ceiling, detector 2 m off the fire's axis, 28 °C ambient.

    Heat release grows as a t-squared fire (Q = growth * t², capped at ``max_kw``). The room is
    a well-mixed smoke volume (optical density rises with the heat released, falls with the air
    changes); the detector's air temperature is ambient + a warming upper layer + Alpert's
    ceiling-jet excess; the thermistor follows it with its own time constant.
    """

    class_name = "fire"
    ADC_CHANNELS = ("smoke", "heat")
    ACTIONS = _actions(
        ignite={
            "growth": Param(default=0.0469, minimum=1e-4, maximum=1.0,
                            doc="t-squared growth factor, kW/s² (NFPA 72 'fast' = 0.0469)"),
            "max_kw": Param(default=2000.0, minimum=1.0, maximum=20000.0,
                            doc="fuel/ventilation-limited peak heat release, kW"),
            "smokiness": Param(default=1.0, minimum=0.0, maximum=20.0,
                               doc="smoke produced per kJ, relative to a mixed office fuel"),
        },
        extinguish={"tau_s": Param(default=4.0, minimum=0.0, maximum=120.0,
                                   doc="time constant of the heat release dying down, s")},
        ventilate={"ach": Param(default=120.0, minimum=0.0, maximum=600.0,
                                doc="air changes per hour (1 = closed room, 120 = smoke fan)")},
        heat_ramp={"k_per_min": Param(default=10.0, minimum=0.0, maximum=60.0,
                                      doc="EN 54-5 heat tunnel: air temperature rise, K/min")},
    )

    ROOM_VOLUME_M3 = 90.0
    CEILING_M = 3.0
    RADIAL_M = 2.0
    SMOKE_OD_PER_KJ = 0.0015         # (optical density per m) * m³ per kJ released
    AIR_HEAT_CAPACITY_KJ_K = 1.2 * 1.005 * ROOM_VOLUME_M3
    LAYER_RETAINED = 0.3             # share of the heat release that stays in the air
    WALL_LOSS_TAU_S = 120.0
    JET_TAU_S = 5.0
    DETECTOR_TAU_S = 10.0
    LEAKAGE_ACH = 1.0

    def __init__(self, seed: int = 0, ambient_c: float = 28.0) -> None:
        super().__init__(seed)
        self.ambient_c = ambient_c
        self.hrr_kw = 0.0
        self.growth = 0.0
        self.max_kw = 0.0
        self.smokiness = 1.0
        self.ignited_at: float | None = None
        self.extinguish_tau_s = 0.0
        self.ach = self.LEAKAGE_ACH
        self.optical_density = 0.0   # decimal OD per metre at the detector
        self.layer_excess_c = 0.0
        self.jet_excess_c = 0.0
        self.detector_c = ambient_c
        self.ramp: tuple[float, float] | None = None   # (K/s, start time): EN 54-5 tunnel

    def _on_heat_ramp(self, p: dict[str, ParamValue]) -> None:
        """The EN 54-5 response-time test: the air at the detector rises linearly from the
        current ambient at a constant rate (its heat tunnel), with no smoke."""
        self.ramp = (float(p["k_per_min"]) / 60.0, self.t)

    @property
    def ramp_excess_c(self) -> float:
        if self.ramp is None:
            return 0.0
        rate, t0 = self.ramp
        return rate * max(0.0, self.t - t0)

    def _on_ignite(self, p: dict[str, ParamValue]) -> None:
        self.growth = float(p["growth"])
        self.max_kw = float(p["max_kw"])
        self.smokiness = float(p["smokiness"])
        self.ignited_at = self.t
        self.extinguish_tau_s = 0.0

    def _on_extinguish(self, p: dict[str, ParamValue]) -> None:
        self.ignited_at = None
        self.extinguish_tau_s = float(p["tau_s"])
        if self.extinguish_tau_s == 0:
            self.hrr_kw = 0.0

    def _on_ventilate(self, p: dict[str, ParamValue]) -> None:
        self.ach = max(float(p["ach"]), 0.0)

    def _alpert_excess(self, q_kw: float) -> float:
        if q_kw <= 0:
            return 0.0
        h, r = self.CEILING_M, self.RADIAL_M
        if r / h <= 0.18:
            return 16.9 * math.pow(q_kw, 2 / 3) / math.pow(h, 5 / 3)
        return 5.38 * math.pow(q_kw / r, 2 / 3) / h

    def _evolve(self, dt_s: float) -> None:
        if self.ignited_at is not None:
            since = self.t + dt_s - self.ignited_at
            self.hrr_kw = min(self.growth * since * since, self.max_kw)
        elif self.hrr_kw > 0:
            self.hrr_kw = _relax(self.hrr_kw, 0.0, self.extinguish_tau_s, dt_s)
            if self.hrr_kw < 0.05:
                self.hrr_kw = 0.0
        air_changes = self.ach / 3600.0
        od_source = self.SMOKE_OD_PER_KJ * self.smokiness * self.hrr_kw / self.ROOM_VOLUME_M3
        # Well-mixed room: dOD/dt = source - air_changes * OD, solved exactly per sub-step.
        if air_changes > 0:
            self.optical_density = _relax(self.optical_density, od_source / air_changes,
                                          1.0 / air_changes, dt_s)
        else:
            self.optical_density += od_source * dt_s
        loss = 1.0 / self.WALL_LOSS_TAU_S + air_changes
        layer_target = self.LAYER_RETAINED * self.hrr_kw / self.AIR_HEAT_CAPACITY_KJ_K / loss
        self.layer_excess_c = _relax(self.layer_excess_c, layer_target, 1.0 / loss, dt_s)
        self.jet_excess_c = _relax(self.jet_excess_c, self._alpert_excess(self.hrr_kw),
                                   self.JET_TAU_S, dt_s)
        gas_c = self.ambient_c + self.layer_excess_c + self.jet_excess_c
        if self.ramp is not None:   # the tunnel's air at the end of this sub-step
            gas_c += self.ramp[0] * max(0.0, self.t + dt_s - self.ramp[1])
        self.detector_c = _relax(self.detector_c, gas_c, self.DETECTOR_TAU_S, dt_s)

    @property
    def obscuration_pct_m(self) -> float:
        return 100.0 * (1.0 - math.pow(10.0, -self.optical_density))

    def truth(self) -> dict[str, float]:
        return {
            "smoke": self.obscuration_pct_m,
            "temperature": self.detector_c,
            "gas_temperature": (self.ambient_c + self.layer_excess_c + self.jet_excess_c
                                + self.ramp_excess_c),
            "hrr_kw": self.hrr_kw,
        }

    def _adc_counts(self) -> dict[str, float]:
        smoke = self.obscuration_pct_m + self.rng.gauss(0.0, 0.02)   # chamber dust, amp noise
        heat_c = self.detector_c + self.rng.gauss(0.0, 0.03)
        smoke_v = enc.counts_to_volts(enc.smoke_counts_exact(smoke))   # amplifier output
        return {
            "smoke": enc.esp32_counts_exact(smoke_v) + self._adc_noise(),
            "heat": enc.esp32_counts_exact(enc.ntc_volts(heat_c)) + self._adc_noise(),
        }


# =========================================================================== flood


class FloodSensor(VirtualSensor):
    """A low street and its drainage channel as one bucket, read by a 4-20 mA level transducer.

    Rain on the catchment runs off into the bucket; the outfall drains it like an orifice
    (outflow ∝ √head). With a tide the outfall's tail water rises and falls, cutting the
    drainage and, above the street level, pushing water back in (Saigon's triều cường).
    """

    class_name = "flood"
    ADC_CHANNELS = ("level",)
    ACTIONS = _actions(
        rain={"mm_h": Param(default=200.0, minimum=0.0, maximum=500.0,
                            doc="rainfall intensity, mm/h")},
        stop_rain={},
        block_drains={"capacity": Param(default=0.3, minimum=0.0, maximum=1.0,
                                        doc="remaining share of the outfall capacity")},
        clear_drains={},
        tide={
            "mean_m": Param(default=0.2, minimum=-5.0, maximum=5.0, doc="mean tail water, m"),
            "amplitude_m": Param(default=0.5, minimum=0.0, maximum=5.0, doc="tidal amplitude, m"),
            "period_s": Param(default=120.0, minimum=1.0, maximum=200000.0,
                              doc="tidal period (compressed; a real one is 12.4 h)"),
        },
        tide_off={},
    )

    CATCHMENT_RATIO = 800.0    # catchment area / bucket surface area
    RUNOFF_COEFF = 0.9         # paved city
    OUTFALL_K = 0.03           # m^0.5 / s: dh/dt = -k √head
    BASE_LEVEL_M = 0.05        # dry-weather flow in the channel
    WAVE_NOISE_M = 0.004

    def __init__(self, seed: int = 0, span_m: float | None = None) -> None:
        super().__init__(seed)
        if span_m is None:
            span_default = load_maps().classes["flood"].holding_register("sensor_span").default
            span_m = float(span_default if span_default is not None else 5.0)
        self.span_m = span_m
        self.level_m = self.BASE_LEVEL_M
        self.rain_mm_h = 0.0
        self.drain_capacity = 1.0
        self.tide: tuple[float, float, float, float] | None = None  # mean, amp, period, t0

    def _on_rain(self, p: dict[str, ParamValue]) -> None:
        self.rain_mm_h = float(p["mm_h"])

    def _on_stop_rain(self, p: dict[str, ParamValue]) -> None:
        self.rain_mm_h = 0.0

    def _on_block_drains(self, p: dict[str, ParamValue]) -> None:
        self.drain_capacity = float(p["capacity"])

    def _on_clear_drains(self, p: dict[str, ParamValue]) -> None:
        self.drain_capacity = 1.0

    def _on_tide(self, p: dict[str, ParamValue]) -> None:
        self.tide = (float(p["mean_m"]), float(p["amplitude_m"]), float(p["period_s"]), self.t)

    def _on_tide_off(self, p: dict[str, ParamValue]) -> None:
        self.tide = None

    @property
    def tail_water_m(self) -> float:
        if self.tide is None:
            return 0.0
        mean, amp, period, t0 = self.tide
        return mean + amp * math.sin(2.0 * math.pi * (self.t - t0) / period)

    def _evolve(self, dt_s: float) -> None:
        k = self.OUTFALL_K * self.drain_capacity
        inflow = self.RUNOFF_COEFF * self.CATCHMENT_RATIO * self.rain_mm_h / 3.6e6
        base_inflow = self.OUTFALL_K * math.sqrt(self.BASE_LEVEL_M)
        tail = max(self.tail_water_m, 0.0)
        head = self.level_m - tail
        outflow = math.copysign(k * math.sqrt(abs(head)), head)
        self.level_m = max(0.0, self.level_m + (inflow + base_inflow - outflow) * dt_s)

    @property
    def loop_current_ma(self) -> float:
        return enc.span_ma(self.level_m, self.span_m)

    def truth(self) -> dict[str, float]:
        return {
            "level": self.level_m,
            "loop_current": self.loop_current_ma,
            "rain": self.rain_mm_h,
            "tail_water": self.tail_water_m,
        }

    def _adc_counts(self) -> dict[str, float]:
        level = self.level_m + self.rng.gauss(0.0, self.WAVE_NOISE_M)
        ma = enc.span_ma(level, self.span_m)
        return {"level": _loop_counts_saturated(ma) + self._adc_noise()}


# =========================================================================== water


def _diurnal_demand(hour: float) -> float:
    """Relative network demand: a night minimum, a morning peak at 6-7 h, an evening one at 19 h."""
    def bump(centre: float, width: float) -> float:
        d = (hour - centre + 12.0) % 24.0 - 12.0
        return math.exp(-(d / width) * (d / width))
    return 0.35 + 0.65 * bump(6.5, 1.5) + 0.5 * bump(19.0, 2.0)


class WaterSensor(VirtualSensor):
    """A station on a distribution main: pressure, pH, turbidity and free chlorine.

    Pressure is the static head minus a friction loss that grows with the square of the daily
    demand; chlorine is held by the dosing plant and decays first-order when dosing fails.
    """

    class_name = "water"
    ADC_CHANNELS = ("pressure", "ph", "turbidity", "chlorine")
    ACTIONS = _actions(
        dosing_fail={"half_life_s": Param(default=30.0, minimum=1.0, maximum=1e6,
                                          doc="chlorine half-life without dosing (compressed)")},
        dosing_restore={
            "mg_l": Param(default=0.5, minimum=0.0, maximum=5.0, doc="dosing set point, mg/L"),
            "tau_s": Param(default=15.0, minimum=0.0, maximum=3600.0, doc="recovery, s"),
        },
        demand={"factor": Param(default=1.5, minimum=0.0, maximum=5.0,
                                doc="demand relative to the daily pattern")},
        pipe_burst={"drop_bar": Param(default=2.5, minimum=0.0, maximum=10.0,
                                      doc="pressure lost at the station")},
        repair={},
        turbidity={
            "ntu": Param(default=5.0, minimum=0.0, maximum=100.0, doc="new turbidity, NTU"),
            "tau_s": Param(default=10.0, minimum=0.0, maximum=3600.0),
        },
        ph={
            "ph": Param(default=7.2, minimum=0.0, maximum=14.0, doc="new pH"),
            "tau_s": Param(default=20.0, minimum=0.0, maximum=3600.0),
        },
    )

    STATIC_BAR = 4.2
    FRICTION_BAR = 1.4           # loss at a demand of 1.0
    PRESSURE_TAU_S = 2.0
    DAY_S = 86400.0

    def __init__(self, seed: int = 0, start_hour: float = 10.0) -> None:
        super().__init__(seed)
        self.start_hour = start_hour
        self.demand_factor = 1.0
        self.burst_drop_bar = 0.0
        self.pressure_bar = self._pressure_target()
        self.ph = 7.2
        self.ph_target, self.ph_tau_s = 7.2, 20.0
        self.turbidity_ntu = 0.5
        self.turbidity_target, self.turbidity_tau_s = 0.5, 10.0
        self.chlorine_mg_l = 0.5
        self.dosing = True
        self.chlorine_set = 0.5
        self.chlorine_tau_s = 15.0
        self.chlorine_half_life_s = 30.0

    @property
    def hour(self) -> float:
        return (self.start_hour + self.t * 24.0 / self.DAY_S) % 24.0

    def _pressure_target(self) -> float:
        demand = _diurnal_demand(self.hour) * self.demand_factor
        return max(0.0, self.STATIC_BAR - self.FRICTION_BAR * demand * demand - self.burst_drop_bar)

    def _on_dosing_fail(self, p: dict[str, ParamValue]) -> None:
        self.dosing = False
        self.chlorine_half_life_s = float(p["half_life_s"])

    def _on_dosing_restore(self, p: dict[str, ParamValue]) -> None:
        self.dosing = True
        self.chlorine_set = float(p["mg_l"])
        self.chlorine_tau_s = float(p["tau_s"])

    def _on_demand(self, p: dict[str, ParamValue]) -> None:
        self.demand_factor = float(p["factor"])

    def _on_pipe_burst(self, p: dict[str, ParamValue]) -> None:
        self.burst_drop_bar = float(p["drop_bar"])

    def _on_repair(self, p: dict[str, ParamValue]) -> None:
        self.burst_drop_bar = 0.0

    def _on_turbidity(self, p: dict[str, ParamValue]) -> None:
        self.turbidity_target, self.turbidity_tau_s = float(p["ntu"]), float(p["tau_s"])

    def _on_ph(self, p: dict[str, ParamValue]) -> None:
        self.ph_target, self.ph_tau_s = float(p["ph"]), float(p["tau_s"])

    def _evolve(self, dt_s: float) -> None:
        self.pressure_bar = _relax(self.pressure_bar, self._pressure_target(),
                                   self.PRESSURE_TAU_S, dt_s)
        self.ph = _relax(self.ph, self.ph_target, self.ph_tau_s, dt_s)
        self.turbidity_ntu = _relax(self.turbidity_ntu, self.turbidity_target,
                                    self.turbidity_tau_s, dt_s)
        if self.dosing:
            self.chlorine_mg_l = _relax(self.chlorine_mg_l, self.chlorine_set,
                                        self.chlorine_tau_s, dt_s)
        else:   # first-order bulk decay: C(t) = C0 · exp(-k t)
            self.chlorine_mg_l *= math.exp(-math.log(2.0) * dt_s / self.chlorine_half_life_s)

    def truth(self) -> dict[str, float]:
        return {
            "pressure": self.pressure_bar,
            "ph": self.ph,
            "turbidity": self.turbidity_ntu,
            "chlorine": self.chlorine_mg_l,
        }

    def _adc_counts(self) -> dict[str, float]:
        g = self.rng.gauss
        pressure = self.pressure_bar + g(0.0, 0.01)   # small surges in the main
        chlorine = max(0.0, self.chlorine_mg_l + g(0.0, 0.004))
        ph = self.ph + g(0.0, 0.01)
        turbidity = max(0.0, self.turbidity_ntu + g(0.0, 0.01))
        exact = enc.esp32_counts_exact
        return {
            "pressure": _loop_counts_saturated(enc.pressure_ma(pressure)) + self._adc_noise(),
            "ph": exact(enc.ph_volts(ph)) + self._adc_noise(),
            "turbidity": exact(enc.turbidity_volts(turbidity)) + self._adc_noise(),
            "chlorine": _loop_counts_saturated(enc.chlorine_ma(chlorine)) + self._adc_noise(),
        }


# =========================================================================== air


def _traffic(hour: float) -> float:
    """Relative traffic: motorbike rush hours around 7:30 and 17:30."""
    def bump(centre: float, width: float) -> float:
        d = (hour - centre + 12.0) % 24.0 - 12.0
        return math.exp(-(d / width) * (d / width))
    return 0.15 + bump(7.5, 1.2) + bump(17.5, 1.5)


class AirSensor(VirtualSensor):
    """A roadside station: PMS5003 on a UART (a frame a second), SCD41 on I2C (every 5 s)."""

    class_name = "air"
    UART_CHANNELS = ("pms",)
    I2C_CHANNELS = ("98",)
    ACTIONS = _actions(
        traffic_peak={
            "pm25": Param(default=60.0, minimum=0.0, maximum=1000.0,
                          doc="PM2.5 added by the jam, µg/m³"),
            "co2_ppm": Param(default=60.0, minimum=0.0, maximum=5000.0,
                             doc="CO2 added by the exhaust, ppm"),
            "tau_s": Param(default=15.0, minimum=0.0, maximum=3600.0,
                           doc="how fast the street air follows, s"),
        },
        traffic_clear={"tau_s": Param(default=15.0, minimum=0.0, maximum=3600.0)},
        co2_plume={"ppm": Param(default=1500.0, minimum=0.0, maximum=30000.0,
                                doc="CO2 added (a generator exhaust, a crowd), ppm")},
        co2_clear={},
        weather={
            "temp_c": Param(default=31.0, minimum=-10.0, maximum=60.0),
            "rh_pct": Param(default=75.0, minimum=0.0, maximum=100.0),
        },
        scd41_power_cycle={"off_s": Param(default=2.0, minimum=0.0, maximum=3600.0,
                                          doc="seconds without supply (a brown-out)")},
    )

    BACKGROUND_PM25 = 18.0     # µg/m³, regional background
    TRAFFIC_PM25 = 12.0        # µg/m³ at a relative traffic of 1
    PM10_RATIO = 1.6           # road dust makes the coarse fraction
    PM1_RATIO = 0.7
    CO2_OUTDOOR = 450.0        # ppm: an urban street
    CO2_TAU_S = 20.0
    PMS_PERIOD_S = 1.0
    SCD41_PERIOD_S = 5.0
    MAX_PENDING_FRAMES = 64    # the HAL's RX ring; older frames are dropped whole
    DAY_S = 86400.0

    def __init__(self, seed: int = 0, start_hour: float = 10.0) -> None:
        super().__init__(seed)
        self.start_hour = start_hour
        self.extra_pm25 = 0.0
        self.extra_co2 = 0.0
        self.plume_co2 = 0.0
        self.pm_tau_s = 15.0
        self.pm25 = self._pm25_target()
        self.co2 = self._co2_target()
        self.temp_c = 31.0
        self.rh_pct = 75.0
        self._pending: list[bytes] = []
        self._next_frame_t = self.PMS_PERIOD_S
        self._next_scd_t = self.SCD41_PERIOD_S
        self._scd_response = self._measure_scd41()
        self.scd_power_cycles = 0
        self._scd_off_until: float | None = None

    @property
    def hour(self) -> float:
        return (self.start_hour + self.t * 24.0 / self.DAY_S) % 24.0

    def _pm25_target(self) -> float:
        return self.BACKGROUND_PM25 + self.TRAFFIC_PM25 * _traffic(self.hour) + self.extra_pm25

    def _co2_target(self) -> float:
        return self.CO2_OUTDOOR + 10.0 * _traffic(self.hour) + self.extra_co2 + self.plume_co2

    def _on_traffic_peak(self, p: dict[str, ParamValue]) -> None:
        self.extra_pm25 = float(p["pm25"])
        self.extra_co2 = float(p["co2_ppm"])
        self.pm_tau_s = float(p["tau_s"])

    def _on_traffic_clear(self, p: dict[str, ParamValue]) -> None:
        self.extra_pm25 = self.extra_co2 = 0.0
        self.pm_tau_s = float(p["tau_s"])

    def _on_co2_plume(self, p: dict[str, ParamValue]) -> None:
        self.plume_co2 = float(p["ppm"])

    def _on_co2_clear(self, p: dict[str, ParamValue]) -> None:
        self.plume_co2 = 0.0

    def _on_weather(self, p: dict[str, ParamValue]) -> None:
        self.temp_c, self.rh_pct = float(p["temp_c"]), float(p["rh_pct"])

    def _on_scd41_power_cycle(self, p: dict[str, ParamValue]) -> None:
        """The SCD41 loses its supply for off_s and powers up again, idle (not measuring)."""
        self._scd_off_until = self.t + float(p["off_s"])
        if float(p["off_s"]) == 0.0:
            self._scd_off_until = None
            self.scd_power_cycles += 1

    @property
    def scd41_powered(self) -> bool:
        return self._scd_off_until is None

    def _evolve(self, dt_s: float) -> None:
        self.pm25 = _relax(self.pm25, self._pm25_target(), self.pm_tau_s, dt_s)
        self.co2 = _relax(self.co2, self._co2_target(), self.CO2_TAU_S, dt_s)

    def truth(self) -> dict[str, float]:
        return {
            "pm1_0": self.pm25 * self.PM1_RATIO,
            "pm2_5": self.pm25,
            "pm10": self.pm25 * self.PM10_RATIO,
            "co2": self.co2,
            "temperature": self.temp_c,
            "humidity": self.rh_pct,
        }

    # ------------------------------------------------------------------ the two digital parts

    def _sample_pm(self, value: float) -> int:
        """A PMS5003 reading: laser-counting noise grows with the load; integers, never < 0."""
        return max(0, round(value + self.rng.gauss(0.0, 0.8 + 0.04 * value)))

    def _measure_pms(self, bad_checksum: bool = False) -> bytes:
        pm25 = self._sample_pm(self.pm25)
        pm1 = min(pm25, self._sample_pm(self.pm25 * self.PM1_RATIO))
        pm10 = max(pm25, self._sample_pm(self.pm25 * self.PM10_RATIO))
        return enc.pms5003_frame(pm1, pm25, pm10, bad_checksum=bad_checksum)

    def _measure_scd41(self) -> bytes:
        g = self.rng.gauss
        return enc.scd41_response(self.co2 + g(0.0, 5.0), self.temp_c + g(0.0, 0.05),
                                  self.rh_pct + g(0.0, 0.2))

    def _after_substep(self) -> None:
        while self.t >= self._next_frame_t - 1e-9:
            self._next_frame_t += self.PMS_PERIOD_S
            self._emit_pms()
        while self.t >= self._next_scd_t - 1e-9:
            self._next_scd_t += self.SCD41_PERIOD_S
            self._scd_response = self._measure_scd41()
        if self._scd_off_until is not None and self.t >= self._scd_off_until - 1e-9:
            self._scd_off_until = None
            self.scd_power_cycles += 1

    def _emit_pms(self) -> None:
        kind = self.faults.get("pms")
        if kind == "open":
            return                                   # TX wire cut: silence
        if kind == "short":
            frame = bytes(enc.FRONT_END.pms_frame_len)   # line held low: break, read as 0x00
        elif kind == "stuck":
            frame = bytes(self._frozen["pms"])
        elif kind == "checksum":
            frame = self._measure_pms(bad_checksum=True)
        elif kind == "noise":
            frame = self._measure_pms()
            if self.rng.random() < 0.3:              # a flipped byte; the checksum catches it
                corrupted = bytearray(frame)
                corrupted[self.rng.randrange(4, 30)] ^= 1 << self.rng.randrange(8)
                frame = bytes(corrupted)
            if self.rng.random() < 0.5:              # line garbage between frames
                frame = self.rng.randbytes(self.rng.randrange(1, 9)) + frame
        else:
            frame = self._measure_pms()
        self._pending.append(frame)
        del self._pending[: -self.MAX_PENDING_FRAMES]

    def _freeze(self, channel: str) -> Any:
        if channel == "pms":
            return self._measure_pms()
        return self._scd_response

    def _uart_feed(self) -> dict[str, str]:
        data = b"".join(self._pending)
        self._pending.clear()
        return {"pms": data.hex()}

    def _power_feed(self) -> dict[str, int]:
        return {"98": self.scd_power_cycles}

    def _i2c_feed(self) -> dict[str, str]:
        kind = self.faults.get("98")
        if kind in ("open", "short", "nack") or not self.scd41_powered:
            return {}                                # no ACK on the bus
        response = self._scd_response
        if kind == "stuck":
            response = bytes(self._frozen["98"])
        elif kind == "checksum":
            response = bytes(b ^ 0x01 if i % 3 == 2 else b for i, b in enumerate(response))
        elif kind == "noise" and self.rng.random() < 0.3:
            corrupted = bytearray(response)
            corrupted[self.rng.choice((0, 1, 3, 4, 6, 7))] ^= 1 << self.rng.randrange(8)
            response = bytes(corrupted)
        return {"98": response.hex()}


# =========================================================================== registry

SENSOR_CLASSES: dict[str, type[VirtualSensor]] = {
    cls.class_name: cls for cls in (FireSensor, FloodSensor, WaterSensor, AirSensor)
}


def sensor_class(class_name: str) -> type[VirtualSensor]:
    try:
        return SENSOR_CLASSES[class_name]
    except KeyError:
        known = ", ".join(SENSOR_CLASSES)
        raise ValueError(f"unknown sensor class {class_name!r} (known: {known})") from None


def validate_action(class_name: str, action: str,
                    params: Mapping[str, object]) -> dict[str, ParamValue]:
    """Check an action for a class without a sensor; ValueError names the offending field."""
    return sensor_class(class_name).validate(action, params)


def make_sensor(class_name: str, seed: int = 0, **options: float) -> VirtualSensor:
    """A fresh virtual sensor of ``class_name`` ('fire', 'flood', 'water', 'air')."""
    return sensor_class(class_name)(seed, **options)
