"""HTTP the dashboard reads beside the domain APIs: one call per page, already shaped for it.

``/dashboard/me`` (what the caller may do, the map's tile URL), ``/dashboard/map`` (areas, sites
and devices with their display state), ``/dashboard/devices/{id}`` (a device page: state,
which fields to chart with which thresholds, alarm history, delivery accounting; the series
themselves come from the telemetry API) and ``/dashboard/health`` (offline devices and
gateways, gateway backlog and declared drops, per-device gap accounting, firmware versions).

Every answer is scoped with the registry's own visibility rules (:func:`visible_devices`,
:func:`device_visible`): the page never receives what the domain API would refuse.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.alarms.models import Alarm
from fleet.alarms.router import alarm_out
from fleet.alarms.schemas import AlarmOut
from fleet.auth.rbac import FIRE_CLASS, Permission, Principal, allowed, permits
from fleet.control.actions import ACTIONS
from fleet.core.deps import SessionDep, SettingsDep, require
from fleet.core.types import IdPath
from fleet.ingest.models import IngestStream
from fleet.registry.models import Area, Device, Gateway, Site
from fleet.registry.service import (
    DEVICE_CLASSES,
    get_device,
    list_areas,
    list_gateways,
    list_sites,
    visible_devices,
)
from fleet.web.state import area_hulls, chart_fields, device_state, worst_state
from hardware.regmap import Maps, load_maps

__all__ = ["router"]

router = APIRouter(prefix="/dashboard", tags=["dashboard"])
Reader = Annotated[Principal, Depends(require(Permission.READ))]

@functools.cache
def _maps() -> Maps:
    return load_maps()


def _open_alarm_devices(session: Session, device_ids: list[int]) -> set[int]:
    if not device_ids:
        return set()
    return set(session.scalars(select(Alarm.device_id).where(
        Alarm.state != "resolved", Alarm.device_id.in_(device_ids)).distinct()))


def _device_row(dev: Device, open_alarm: bool) -> dict[str, Any]:
    return {"id": dev.id, "key": dev.key, "name": dev.name, "device_class": dev.device_class,
            "state": device_state(dev.connectivity, dev.faults or [], open_alarm),
            "connectivity": dev.connectivity, "firmware": dev.firmware,
            "last_seen": dev.last_seen.isoformat() if dev.last_seen else None,
            "faults": list(dev.faults or []), "site_id": dev.site_id,
            "gateway": dev.gateway.key}


def _visible(session: Session, user: Principal) -> list[Device]:
    return list(session.scalars(visible_devices(select(Device), user).order_by(Device.id))
                .unique())


class MeOut(BaseModel):
    username: str
    role: str
    can_acknowledge: bool
    can_command: bool
    #: The device commands the caller's role may send (fleet.control.actions).
    command_actions: list[str]
    can_read_audit: bool
    #: May upload releases and pause, resume or cancel update campaigns (fleet.ota).
    can_manage_ota: bool
    #: The device classes the caller may see (a utility user is not shown fire at all).
    device_classes: list[str]
    tile_url: str
    tile_attribution: str


@router.get("/me", response_model=MeOut)
def me(user: Reader, settings: SettingsDep) -> MeOut:
    return MeOut(username=user.username, role=user.role,
                 can_acknowledge=allowed(user.role, Permission.ACK_ALARMS),
                 can_command=any(user.role in a.roles for a in ACTIONS.values()),
                 command_actions=[n for n, a in ACTIONS.items() if user.role in a.roles],
                 can_read_audit=permits(user, Permission.READ_AUDIT),
                 can_manage_ota=allowed(user.role, Permission.MANAGE_OTA),
                 device_classes=[c for c in DEVICE_CLASSES
                                 if c != FIRE_CLASS or user.is_admin or user.sees_fire],
                 tile_url=settings.dashboard_tile_url,
                 tile_attribution=settings.dashboard_tile_attribution)


@router.get("/map")
def map_view(user: Reader, session: SessionDep) -> dict[str, Any]:
    """Areas (``outline``: the registry's GeoJSON boundary, or None and ``hull``: the [lat, lon]
    hull of the sites below it), sites with the worst state of their devices, and the
    devices themselves (a device without a site is listed, not placed)."""
    devices = _visible(session, user)
    alarmed = _open_alarm_devices(session, [d.id for d in devices])
    rows = [_device_row(d, d.id in alarmed) for d in devices]
    by_site: dict[int | None, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_site[row["site_id"]].append(row)
    sites: list[dict[str, Any]] = []
    positions: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for site in list_sites(session, user):
        site_devices = by_site.get(site.id, [])
        sites.append({"id": site.id, "name": site.name, "area_id": site.area_id,
                      "area": site.area.name, "address": site.address,
                      "lat": site.latitude, "lon": site.longitude,
                      "state": worst_state(d["state"] for d in site_devices),
                      "devices": site_devices})
        if site.latitude is not None and site.longitude is not None:
            positions[site.area_id].append((site.latitude, site.longitude))
    areas: list[Area] = list_areas(session, user)
    hulls = area_hulls(((a.id, a.path, a.outline is not None) for a in areas), positions)
    return {
        "areas": [{"id": a.id, "name": a.name, "kind": a.kind, "parent_id": a.parent_id,
                   "path": a.path, "outline": a.outline, "hull": hulls.get(a.id, [])}
                  for a in areas],
        "sites": sites,
        "unsited": by_site.get(None, []),
    }


def _thresholds(device_class: str) -> list[dict[str, Any]]:
    maps = _maps()
    cmap = maps.classes.get(device_class)
    if cmap is None:
        return []
    charts = []
    for chart in chart_fields(device_class):
        try:
            reg = cmap.input_register(chart.field)
        except KeyError:
            continue
        lines = []
        for name in chart.thresholds:
            try:
                hold = cmap.holding_register(name)
            except KeyError:
                continue
            lines.append({"name": name, "value": hold.default, "unit": hold.unit,
                          "min": hold.minimum, "max": hold.maximum, "desc": hold.desc})
        charts.append({"field": chart.field, "unit": reg.unit, "desc": reg.desc,
                       "thresholds": lines})
    return charts


def _link_counters(gateway: Gateway, device_key: str) -> dict[str, Any] | None:
    """The gateway's Modbus counters for one device, from its last status (``health.buses``:
    polls, timeouts, exception replies, failures in a row), with the bus's name."""
    buses = (gateway.health or {}).get("buses") if isinstance(gateway.health, dict) else None
    if not isinstance(buses, dict):
        return None
    for bus, stats in buses.items():
        devices = stats.get("devices") if isinstance(stats, dict) else None
        if isinstance(devices, dict) and isinstance(devices.get(device_key), dict):
            counters = devices[device_key]
            return {"bus": bus, **{k: counters.get(k) for k in
                                   ("polls", "timeouts", "exceptions", "failures_in_a_row")}}
    return None


def _accounting(session: Session, devices: list[Device]) -> list[dict[str, Any]]:
    keys = {(d.gateway.key, d.key): d for d in devices}
    if not keys:
        return []
    rows = session.scalars(select(IngestStream).where(
        IngestStream.device.in_({k for _, k in keys})).order_by(
        IngestStream.gateway, IngestStream.device, IngestStream.first_at))
    out = []
    for s in rows:
        dev = keys.get((s.gateway, s.device))
        if dev is None:
            continue
        out.append({"device_id": dev.id, "device": dev.key, "name": dev.name,
                    "gateway": s.gateway, "epoch": s.epoch, "produced": s.produced,
                    "received": s.received, "duplicates": s.duplicates,
                    "declared_drops": s.declared_drops, "gaps": s.gaps,
                    "updated_at": s.updated_at.isoformat()})
    return out


@router.get("/devices/{device_id}")
def device_view(device_id: IdPath, user: Reader, session: SessionDep,
                settings: SettingsDep) -> dict[str, Any]:
    dev = get_device(session, user, device_id)  # 404 outside the caller's scope
    alarms = list(session.scalars(select(Alarm).where(Alarm.device_id == dev.id)
                                  .order_by(Alarm.raised_at.desc(), Alarm.id.desc()).limit(50)))
    open_alarm = any(a.state != "resolved" for a in alarms)
    site: Site | None = dev.site
    return {
        **_device_row(dev, open_alarm),
        "address": dev.address, "status": list(dev.status or []), "tags": list(dev.tags or []),
        "gateway_connectivity": dev.gateway.connectivity,
        "site": ({"id": site.id, "name": site.name, "area": site.area.name,
                  "address": site.address} if site is not None else None),
        "link": _link_counters(dev.gateway, dev.key),
        "charts": _thresholds(dev.device_class),
        "alarms": [AlarmOut.model_dump(alarm_out(a, settings), mode="json") for a in alarms],
        "accounting": _accounting(session, [dev]),
    }


@router.get("/health")
def fleet_health(user: Reader, session: SessionDep) -> dict[str, Any]:
    devices = _visible(session, user)
    alarmed = _open_alarm_devices(session, [d.id for d in devices])
    per_gateway: dict[int, list[Device]] = defaultdict(list)
    for d in devices:
        per_gateway[d.gateway_id].append(d)
    accounting = _accounting(session, devices)
    declared: Counter[str] = Counter()
    gaps: Counter[str] = Counter()
    for row in accounting:
        declared[row["gateway"]] += row["declared_drops"]
        gaps[row["gateway"]] += row["gaps"]
    gateways: list[Gateway] = list_gateways(session, user)
    gw_rows = []
    for g in gateways:
        outbox = (g.health or {}).get("outbox", {}) if isinstance(g.health, dict) else {}
        mine = per_gateway.get(g.id, [])
        gw_rows.append({
            "id": g.id, "key": g.key, "name": g.name, "connectivity": g.connectivity,
            "last_seen": g.last_seen.isoformat() if g.last_seen else None,
            "site": g.site.name if g.site is not None else None,
            "backlog": outbox.get("depth"), "oldest_age_s": outbox.get("oldest_age_s"),
            "dropped_telemetry": outbox.get("dropped_telemetry"),
            "declared_drops": declared.get(g.key, 0), "gaps": gaps.get(g.key, 0),
            "devices": len(mine),
            "offline_devices": sum(1 for d in mine if d.connectivity != "online")})
    firmware: Counter[tuple[str, str]] = Counter(
        (d.device_class, d.firmware or "?") for d in devices)
    return {
        "gateways": gw_rows,
        "offline_devices": [_device_row(d, d.id in alarmed) for d in devices
                            if d.connectivity != "online"],
        "accounting": accounting,
        "firmware": [{"device_class": c, "version": v, "count": n}
                     for (c, v), n in sorted(firmware.items())],
        "devices": len(devices),
    }

