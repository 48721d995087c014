"""Cross-checks of a whole gateway config against itself and the register maps in ``hardware/``.

Ids unique across buses and panels, bus names unique, and every rule checked against what its
device can do: alarm, fault and register names from the class's register map, coils from the
common block, holding-register ranges, and panel conditions against the panel's profile. Pure:
returns ``(field path, message)`` pairs; the schema turns them into located errors.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from hardware.regmap import ClassMap, load_maps

if TYPE_CHECKING:
    from gateway.config.schema import (
        DeviceConfig,
        GatewayConfig,
        RuleCondition,
        RuleConfig,
        SerialInputConfig,
    )

__all__ = ["Issues", "cross_check"]

Issues = list[tuple[tuple[str | int, ...], str]]


def cross_check(config: GatewayConfig) -> Issues:
    """Every problem of the whole file, each at its field."""
    issues: Issues = []
    bus_names = Counter(bus.name for bus in config.bus)
    issues += [(("bus", i, "name"), f"bus name {bus.name!r} is used more than once")
               for i, bus in enumerate(config.bus) if bus_names[bus.name] > 1]
    owners: dict[str, str] = {}
    for i, bus in enumerate(config.bus):
        for j, dev in enumerate(bus.device):
            where = f"bus[{i}].device[{j}]"
            if dev.id in owners:
                issues.append((("bus", i, "device", j, "id"), f"device id {dev.id!r} is "
                               f"already used by {owners[dev.id]}"))
            owners.setdefault(dev.id, where)
    panels: dict[str, SerialInputConfig] = {}
    for k, panel in enumerate(config.serial_input):
        if panel.device_id in owners:
            issues.append((("serial_input", k, "device_id"), f"device id "
                           f"{panel.device_id!r} is already used by {owners[panel.device_id]}"))
        owners.setdefault(panel.device_id, f"serial_input[{k}]")
        panels.setdefault(panel.device_id, panel)
    modbus: dict[str, DeviceConfig] = {}
    for _, dev in config.devices():
        modbus.setdefault(dev.id, dev)
    for r, rule in enumerate(config.rule):
        issues += [(("rule", r, *loc), msg) for loc, msg in
                   _check_rule(rule, modbus, panels)]
    return issues


def _check_rule(rule: RuleConfig, modbus: dict[str, DeviceConfig],
                panels: dict[str, SerialInputConfig],
                ) -> list[tuple[tuple[str | int, ...], str]]:
    issues: list[tuple[tuple[str | int, ...], str]] = []
    when, then = rule.when, rule.then
    maps = load_maps()
    cmap: ClassMap | None = None
    if when.device is not None:
        if when.device in panels:
            issues += _check_panel_condition(when, panels[when.device])
        elif when.device not in modbus:
            issues.append((("when", "device"), f"no device {when.device!r} in this config"))
        else:
            cmap = modbus[when.device].class_map
    elif when.device_class is not None:
        if when.device_class not in maps.classes:
            issues.append((("when", "class"), f"unknown device class {when.device_class!r}; "
                           f"the register maps declare {', '.join(maps.classes)}"))
        else:
            cmap = maps.classes[when.device_class]
    if cmap is not None:
        if when.alarm is not None and when.alarm != "any":
            names = [b.name for b in cmap.alarm_bits]
            if when.alarm not in names:
                issues.append((("when", "alarm"), f"class {cmap.name} has no alarm "
                               f"{when.alarm!r}; it has {', '.join(names)} (or \"any\")"))
        if when.fault is not None and when.fault != "any":
            names = [b.name for b in cmap.fault_bits]
            if when.fault not in names:
                issues.append((("when", "fault"), f"class {cmap.name} has no fault "
                               f"{when.fault!r}; it has {', '.join(names)} (or \"any\")"))
        if when.value is not None:
            names = [reg.name for reg in cmap.input]
            if when.value not in names:
                issues.append((("when", "value"), f"class {cmap.name} has no input register "
                               f"{when.value!r}; see docs/registers.md"))
    target = modbus.get(then.device)
    if target is None:
        what = ("is a serial input, which cannot be written" if then.device in panels
                else "is not in this config")
        issues.append((("then", "device"), f"device {then.device!r} {what}; the action needs a "
                       "Modbus device from a [[bus.device]]"))
    if then.coil is not None:
        coils = {c.bit: c.name for c in maps.coils}
        if then.coil not in coils and then.coil not in coils.values():
            issues.append((("then", "coil"), f"no coil {then.coil!r}; the coils are "
                           + ", ".join(f"{a} ({n})" for a, n in coils.items())))
    if then.register_name is not None and target is not None:
        try:
            reg = target.class_map.holding_register(then.register_name)
        except KeyError:
            names = [h.name for h in target.class_map.holding]
            issues.append((("then", "register"), f"class {target.device_class} has no holding "
                           f"register {then.register_name!r}; it has {', '.join(names)}"))
        else:
            value = float(then.value)
            lo = reg.minimum if reg.minimum is not None else float("-inf")
            hi = reg.maximum if reg.maximum is not None else float("inf")
            if not lo <= value <= hi:
                issues.append((("then", "value"), f"{value:g} is outside {reg.name}'s range "
                               f"{reg.minimum:g}–{reg.maximum:g} {reg.unit}".rstrip()))
    return issues


def _check_panel_condition(when: RuleCondition, panel: SerialInputConfig,
                           ) -> list[tuple[tuple[str | int, ...], str]]:
    kinds = {p.kind for p in panel.parser_profile.pattern}
    raising = sorted(kinds & {"fire", "prealarm", "supervisory"})
    if when.alarm is not None and when.alarm != "any" and when.alarm not in raising:
        return [(("when", "alarm"), f"panel {panel.device_id!r} (profile "
                 f"{panel.parser_profile.name}) raises {', '.join(raising)} (or \"any\"), "
                 f"not {when.alarm!r}")]
    if when.fault is not None and when.fault != "any":
        return [(("when", "fault"), "a panel's faults are matched with fault = \"any\"")]
    if when.value is not None:
        return [(("when", "value"), "a panel has no values, only events")]
    return []
