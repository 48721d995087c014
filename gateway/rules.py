"""Edge rules: act locally, without the broker, within one poll cycle.

Rules are declared in the gateway config (``[[rule]]``, validated in gateway/config/). After
every poll the engine checks the rules that watch that device (or its class); a condition that
becomes true fires its action (write a coil or a holding register on a device, possibly on
another bus); with ``release = "auto"`` a coil is put back when no watched device holds the
condition any more. The decision is pure (:meth:`RuleEngine.evaluate`); writes go through the
target bus' poller so they queue ahead of routine polling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gateway.config import RuleConfig
from gateway.decode import DeviceDecoder
from hardware.regmap import load_maps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Action:
    rule: str
    device: str
    coil: int | None
    register: str | None
    value: bool | float
    reason: str


class RuleEngine:
    def __init__(self, rules: list[RuleConfig]):
        self.rules = rules
        self._holding: list[set[str]] = [set() for _ in rules]  # devices meeting each rule
        self.fired = 0

    @staticmethod
    def _name(rule: RuleConfig, index: int) -> str:
        return rule.name or f"rule[{index}]"

    def _watches(self, rule: RuleConfig, decoder: DeviceDecoder) -> bool:
        when = rule.when
        if when.device is not None:
            return when.device == decoder.info.id
        return when.device_class == decoder.info.cls

    @staticmethod
    def _holds(rule: RuleConfig, decoder: DeviceDecoder) -> bool:
        when = rule.when
        if decoder.online is False:
            return False  # no decisions on stale data
        values = decoder.values
        cmap = decoder.cmap
        if when.alarm is not None:
            word = int(values.get("alarm_bits", 0))
            if when.alarm == "any":
                warn = {b.bit for b in cmap.alarm_bits if b.severity == "warning"}
                return any(word >> b.bit & 1 for b in cmap.alarm_bits if b.bit not in warn)
            return any(word >> b.bit & 1 for b in cmap.alarm_bits if b.name == when.alarm)
        if when.fault is not None:
            word = int(values.get("fault_bits", 0))
            if when.fault == "any":
                return word != 0
            return any(word >> b.bit & 1 for b in cmap.fault_bits if b.name == when.fault)
        if when.value is not None and when.value in values:
            v = values[when.value]
            return (when.above is None or v > when.above) and \
                   (when.below is None or v < when.below)
        return False

    def evaluate(self, decoder: DeviceDecoder) -> list[Action]:
        """Actions to take after a fresh reading of one device."""
        actions: list[Action] = []
        for i, rule in enumerate(self.rules):
            if not self._watches(rule, decoder):
                continue
            holding = self._holding[i]
            was = bool(holding)
            if self._holds(rule, decoder):
                holding.add(decoder.info.id)
            else:
                holding.discard(decoder.info.id)
            now = bool(holding)
            name = self._name(rule, i)
            if now and not was:
                self.fired += 1
                actions.append(self._action(rule, name, rule.then.value,
                                            f"{decoder.info.id} meets {name}"))
            elif was and not now and rule.release == "auto" and rule.then.coil is not None:
                actions.append(self._action(rule, name, not rule.then.value,
                                            f"{name} released"))
        return actions

    def event(self, device_id: str, kind: str) -> list[Action]:
        """A panel event (serial input) against rules that watch that panel."""
        actions = []
        for i, rule in enumerate(self.rules):
            when = rule.when
            if when.device != device_id:
                continue
            if (when.alarm is not None and when.alarm in ("any", kind)) or \
                    (when.fault is not None and kind == "fault"):
                name = self._name(rule, i)
                self.fired += 1
                actions.append(self._action(rule, name, rule.then.value,
                                            f"{device_id} reported {kind}"))
        return actions

    @staticmethod
    def _action(rule: RuleConfig, name: str, value: Any, reason: str) -> Action:
        coil = rule.then.coil
        if isinstance(coil, str):
            coil = next(c.bit for c in load_maps().coils if c.name == coil)
        return Action(name, rule.then.device, coil, rule.then.register_name, value, reason)
