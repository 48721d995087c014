"""Registry logic: the area tree, sites, gateways, devices, what each user may see of them, CSV
import/export, and the hooks ingest calls when MQTT says something about a device or gateway.

Every function takes a Session and never commits: the caller owns the unit of work (one API
request, or one ingest batch that is committed before its messages are acknowledged).

Visibility (``fleet.auth.rbac``): a user sees devices whose site lies in their area subtree;
fire devices are hidden from utility users without the fire grant; devices with no site
("unassigned", auto-created when first heard on MQTT) are for admins only.

Connectivity: a device is online/offline from its own retained ``state`` (the gateway's report)
and "unknown" while its gateway is offline (its own report or its MQTT Last Will): the last word
we had is not a promise that the device is fine. A missed message never makes a device offline.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, cast, func, select, update
from sqlalchemy.orm import Session

from contracts.mqtt import GatewayStatusPayload, StatePayload, valid_id
from fleet.audit.service import actor_gateway, record
from fleet.auth.rbac import Principal, can_see
from fleet.core.errors import Conflict, FleetError, NotFound
from fleet.registry.models import Area, Device, Gateway, Site
from fleet.registry.outline import OutlineError, check_outline, outline_summary

__all__ = [
    "DEVICE_CLASSES",
    "CsvRowError",
    "DeviceContext",
    "apply_gateway_status",
    "apply_state",
    "check_area_parent",
    "create_area",
    "create_device",
    "create_gateway",
    "create_site",
    "device_context",
    "ensure_device",
    "ensure_gateway",
    "export_devices_csv",
    "get_device",
    "import_devices_csv",
    "list_areas",
    "list_devices",
    "move_area",
    "set_area_outline",
    "touch_device",
    "visible_devices",
]

log = logging.getLogger(__name__)

#: Sensor classes of the Modbus identity block (register 1), by name.
DEVICE_CLASSES = ("fire", "flood", "water", "air")


# -- visibility --------------------------------------------------------------------------------
def visible_devices(query: Select[Any], user: Principal) -> Select[Any]:
    """Restrict a query that selects from Device to what ``user`` may see."""
    if user.sees_unassigned:  # the root admin: every device, assigned or not
        return query
    # The user's sites as a subquery: the area tree and the sites are small, so the database
    # resolves them first and reaches devices through the site index, not by scanning devices.
    sites = select(Site.id)
    if user.area_path is not None:
        sites = sites.join(Area, Site.area_id == Area.id).where(
            Area.path.startswith(user.area_path, autoescape=True))
    query = query.where(Device.site_id.in_(sites))
    if not user.sees_fire:
        query = query.where(Device.device_class != "fire")
    return query


def _area_path(device: Device) -> str | None:
    return device.site.area.path if device.site is not None else None


def device_visible(user: Principal, device: Device) -> bool:
    return can_see(user, _area_path(device), device.device_class)


# -- areas -------------------------------------------------------------------------------------
def _checked_outline(outline: dict[str, Any] | None) -> dict[str, Any] | None:
    if outline is None:
        return None
    try:
        return check_outline(outline)
    except OutlineError as exc:
        raise FleetError(f"outline: {exc}", status=422, code="validation") from None


def create_area(session: Session, *, name: str, kind: str = "", parent_id: int | None = None,
                code: str | None = None, outline: dict[str, Any] | None = None,
                actor: str = "system") -> Area:
    """A new area under ``parent_id``; ``outline`` (GeoJSON) is checked here too, so a caller
    that is not the API (a seed script) cannot store what the API would refuse."""
    outline = _checked_outline(outline)
    parent = None
    if parent_id is not None:
        parent = session.get(Area, parent_id)
        if parent is None:
            raise NotFound(f"parent area {parent_id} does not exist")
    if session.scalar(select(Area.id).where(Area.parent_id.is_(parent_id) if parent_id is None
                                            else Area.parent_id == parent_id,
                                            Area.name == name)) is not None:
        raise Conflict(f"area {name!r} exists under this parent")
    if code and session.scalar(select(Area.id).where(Area.code == code)) is not None:
        raise Conflict(f"area code {code!r} is taken")
    area = Area(name=name, kind=kind, parent_id=parent_id, code=code or None, outline=outline)
    session.add(area)
    session.flush()
    area.path = f"{parent.path if parent else '/'}{area.id}/"
    detail: dict[str, Any] = {"name": name, "kind": kind, "parent_id": parent_id}
    if outline is not None:
        detail["outline"] = outline_summary(outline)
    record(session, actor, "area.created", "area", area.id, detail)
    return area


def set_area_outline(session: Session, user: Principal, area_id: int,
                     outline: dict[str, Any] | None, actor: str = "system") -> Area:
    """Set (or, with None, remove) the boundary of an area in ``user``'s scope. The audit log
    keeps the shape, size and bounding box of the old and new outlines, not every vertex."""
    area = get_area(session, user, area_id)
    outline = _checked_outline(outline)
    before = outline_summary(area.outline)
    area.outline = outline
    record(session, actor, "area.outline_set" if outline is not None else "area.outline_removed",
           "area", area.id, {"before": before, "after": outline_summary(outline)})
    return area


def move_area(session: Session, area_id: int, new_parent_id: int | None,
              actor: str = "system") -> Area:
    """Re-parent an area (ward mergers happen); every descendant's path follows."""
    area = session.get(Area, area_id)
    if area is None:
        raise NotFound(f"area {area_id} does not exist")
    new_prefix = "/"
    if new_parent_id is not None:
        parent = session.get(Area, new_parent_id)
        if parent is None:
            raise NotFound(f"area {new_parent_id} does not exist")
        if parent.path.startswith(area.path):
            raise Conflict("an area cannot move under itself or its own descendant")
        new_prefix = parent.path
    old_path, new_path = area.path, f"{new_prefix}{area.id}/"
    for sub in session.scalars(select(Area).where(Area.path.startswith(old_path,
                                                                       autoescape=True))):
        sub.path = new_path + sub.path[len(old_path):]
    area.parent_id = new_parent_id
    record(session, actor, "area.moved", "area", area.id,
           {"from": old_path, "to": new_path})
    return area


def list_areas(session: Session, user: Principal) -> list[Area]:
    query = select(Area)
    if user.area_path is not None:
        query = query.where(Area.path.startswith(user.area_path, autoescape=True))
    return list(session.scalars(query.order_by(Area.path)))


def get_area(session: Session, user: Principal, area_id: int) -> Area:
    area = session.get(Area, area_id)
    if area is None or not (user.area_path is None or area.path.startswith(user.area_path)):
        raise NotFound(f"area {area_id} not found")
    return area


def check_area_parent(session: Session, user: Principal, parent_id: int | None) -> None:
    """May ``user`` put an area under ``parent_id``? Only inside their subtree; a new top-level
    area (no parent) only from the root scope."""
    if parent_id is None:
        if not user.is_root:
            raise FleetError("only a city-wide admin may add or move a top-level area",
                             status=403, code="forbidden")
        return
    get_area(session, user, parent_id)


# -- sites and gateways ------------------------------------------------------------------------
def create_site(session: Session, user: Principal, *, name: str, area_id: int,
                latitude: float | None = None, longitude: float | None = None,
                address: str = "") -> Site:
    get_area(session, user, area_id)
    site = Site(name=name, area_id=area_id, latitude=latitude, longitude=longitude,
                address=address)
    session.add(site)
    session.flush()
    record(session, f"user:{user.username}", "site.created", "site", site.id,
           {"name": name, "area_id": area_id})
    return site


def _site_in_scope(session: Session, user: Principal, site_id: int | None) -> Site | None:
    if site_id is None:
        if not user.sees_unassigned:
            raise FleetError("only a city-wide admin may leave a device or gateway unassigned",
                             status=403, code="forbidden")
        return None
    site = session.get(Site, site_id)
    if site is None or not can_see(user, site.area.path, None):
        raise NotFound(f"site {site_id} not found")
    return site


def list_sites(session: Session, user: Principal) -> list[Site]:
    query = select(Site).join(Area, Site.area_id == Area.id)
    if user.area_path is not None:
        query = query.where(Area.path.startswith(user.area_path, autoescape=True))
    return list(session.scalars(query.order_by(Site.id)))


def create_gateway(session: Session, user: Principal, *, key: str, name: str = "",
                   site_id: int | None = None) -> Gateway:
    _site_in_scope(session, user, site_id)
    existing = session.scalar(select(Gateway).where(Gateway.key == key))
    if existing is not None and not existing.auto_created:
        raise Conflict(f"gateway {key!r} is already registered")
    gw = existing or Gateway(key=key)
    gw.name, gw.site_id, gw.auto_created = name, site_id, False
    session.add(gw)
    session.flush()
    record(session, f"user:{user.username}", "gateway.registered", "gateway", gw.id,
           {"key": key, "site_id": site_id})
    return gw


def list_gateways(session: Session, user: Principal) -> list[Gateway]:
    gateways = session.scalars(select(Gateway).order_by(Gateway.id))
    return [g for g in gateways
            if can_see(user, g.site.area.path if g.site else None, None)]


# -- devices -----------------------------------------------------------------------------------
def _check_class(device_class: str) -> None:
    if device_class not in DEVICE_CLASSES:
        raise FleetError(f"unknown device class {device_class!r}; one of "
                         f"{', '.join(DEVICE_CLASSES)}", status=422, code="validation")


def create_device(session: Session, user: Principal, *, gateway_id: int, key: str,
                  device_class: str, name: str = "", address: int | None = None,
                  site_id: int | None = None, tags: Sequence[str] = ()) -> Device:
    _check_class(device_class)
    gw = session.get(Gateway, gateway_id)
    if gw is None or not can_see(user, gw.site.area.path if gw.site else None, None):
        raise NotFound(f"gateway {gateway_id} not found")
    _site_in_scope(session, user, site_id)
    if not can_see(user, _site_path(session, site_id), device_class):
        raise NotFound(f"site {site_id} not found")
    existing = session.scalar(select(Device).where(Device.gateway_id == gw.id, Device.key == key))
    if existing is not None and not existing.auto_created:
        raise Conflict(f"device {key!r} is already registered on gateway {gw.key!r}")
    dev = existing or Device(gateway_id=gw.id, key=key)
    dev.device_class, dev.name, dev.address, dev.site_id = device_class, name, address, site_id
    dev.tags, dev.auto_created = sorted(set(tags)), False
    session.add(dev)
    session.flush()
    record(session, f"user:{user.username}", "device.registered", "device", dev.id,
           {"gateway": gw.key, "key": key, "class": device_class, "site_id": site_id})
    return dev


def _site_path(session: Session, site_id: int | None) -> str | None:
    if site_id is None:
        return None
    site = session.get(Site, site_id)
    return site.area.path if site else None


def update_device(session: Session, user: Principal, device_id: int,
                  changes: dict[str, Any]) -> Device:
    dev = get_device(session, user, device_id)
    if "site_id" in changes:
        _site_in_scope(session, user, changes["site_id"])
    before = {k: getattr(dev, k) for k in changes}
    for field, value in changes.items():
        setattr(dev, field, sorted(set(value)) if field == "tags" else value)
    if "site_id" in changes and dev.site_id is not None:
        dev.auto_created = False
    session.flush()
    session.refresh(dev)
    if not device_visible(user, dev):
        raise NotFound("that site is not yours to put the device in")
    record(session, f"user:{user.username}", "device.updated", "device", dev.id,
           {"before": before, "after": changes})
    return dev


def get_device(session: Session, user: Principal, device_id: int) -> Device:
    dev = session.get(Device, device_id)
    if dev is None or not device_visible(user, dev):
        raise NotFound(f"device {device_id} not found")
    return dev


@dataclass(frozen=True)
class DeviceFilter:
    area_id: int | None = None
    site_id: int | None = None
    gateway: str | None = None
    device_class: str | None = None
    connectivity: str | None = None
    tag: str | None = None
    unassigned: bool | None = None


def list_devices(session: Session, user: Principal, flt: DeviceFilter, *, limit: int = 100,
                 offset: int = 0) -> tuple[int, list[Device]]:
    """One page of the devices ``user`` may see, matching ``flt``, and the total count."""
    query = visible_devices(select(Device), user)
    if flt.area_id is not None:
        area = get_area(session, user, flt.area_id)
        sub = select(Site.id).join(Area, Site.area_id == Area.id).where(
            Area.path.startswith(area.path, autoescape=True))
        query = query.where(Device.site_id.in_(sub))
    if flt.site_id is not None:
        query = query.where(Device.site_id == flt.site_id)
    if flt.gateway is not None:
        query = query.where(Device.gateway_id.in_(select(Gateway.id)
                                                  .where(Gateway.key == flt.gateway)))
    if flt.device_class is not None:
        query = query.where(Device.device_class == flt.device_class)
    if flt.connectivity is not None:
        query = query.where(Device.connectivity == flt.connectivity)
    if flt.unassigned is not None:
        query = query.where(Device.site_id.is_(None) if flt.unassigned
                            else Device.site_id.is_not(None))
    if flt.tag is not None:
        # Tags are a JSON list, stored as JSON text on both databases: match the tag's own JSON
        # encoding, quotes included, so "kho" does not match "kho-2".
        query = query.where(cast(Device.tags, String).contains(json.dumps(flt.tag),
                                                                autoescape=True))
    total = session.scalar(select(func.count()).select_from(
        query.with_only_columns(Device.id).order_by(None).subquery()))
    rows = session.scalars(query.order_by(Device.id).limit(limit).offset(offset)).unique()
    return int(total or 0), list(rows)


# -- CSV import / export -----------------------------------------------------------------------
CSV_COLUMNS = ("gateway", "device", "class", "name", "address", "site_id", "tags")


@dataclass(frozen=True)
class CsvRowError:
    row: int  # 1-based line number in the file, the header being row 1
    column: str
    message: str


class CsvImportError(FleetError):
    status, code = 422, "csv-invalid"


def import_devices_csv(session: Session, user: Principal, text: str) -> dict[str, int]:
    """Register or update devices from CSV (columns :data:`CSV_COLUMNS`; ``tags`` separated by
    ``;``). All or nothing: any bad row fails the import with every error row-numbered."""
    try:
        return _import_devices_csv(session, user, text)
    except csv.Error as exc:  # the file itself is not CSV (a stray quote, a bare CR...)
        raise CsvImportError(f"not readable as CSV: {exc}",
                             errors=[{"row": None, "column": None,
                                      "message": str(exc)}]) from None


def _import_devices_csv(session: Session, user: Principal, text: str) -> dict[str, int]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in ("gateway", "device", "class") if c not in (reader.fieldnames or [])]
    if missing:
        raise CsvImportError(f"the header lacks {', '.join(missing)}",
                             errors=[{"row": 1, "column": c, "message": "missing column"}
                                     for c in missing])
    errors: list[CsvRowError] = []
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], int] = {}
    for line, raw in enumerate(reader, start=2):
        row, row_errors = _parse_csv_row(session, user, line, raw)
        errors.extend(row_errors)
        if row_errors:
            continue
        ident = (row["gateway"], row["key"])
        if ident in seen:
            errors.append(CsvRowError(line, "device", f"duplicate of row {seen[ident]}"))
            continue
        seen[ident] = line
        rows.append(row)
    if errors:
        raise CsvImportError(f"{len(errors)} error(s); nothing was imported",
                             errors=[e.__dict__ for e in errors])
    created = updated = 0
    for row in rows:
        gw = ensure_gateway(session, row["gateway"], actor=f"user:{user.username}",
                            registered=True)
        dev = session.scalar(select(Device).where(Device.gateway_id == gw.id,
                                                  Device.key == row["key"]))
        if dev is None:
            dev = Device(gateway_id=gw.id, key=row["key"])
            session.add(dev)
            created += 1
        else:
            if not device_visible(user, dev) and not dev.auto_created:
                raise CsvImportError(f"row {row['line']}: device {row['key']!r} exists outside "
                                     "your area", errors=[{"row": row["line"],
                                                           "column": "device",
                                                           "message": "not yours to change"}])
            updated += 1
        dev.device_class, dev.name, dev.address = row["class"], row["name"], row["address"]
        dev.site_id, dev.tags, dev.auto_created = row["site_id"], row["tags"], False
    session.flush()
    record(session, f"user:{user.username}", "device.csv_imported", "device", "*",
           {"created": created, "updated": updated})
    return {"created": created, "updated": updated}


def _parse_csv_row(session: Session, user: Principal, line: int,
                   raw: dict[str, str | None]) -> tuple[dict[str, Any], list[CsvRowError]]:
    errs: list[CsvRowError] = []

    def get(col: str) -> str:
        return (raw.get(col) or "").strip()

    for col, value in raw.items():
        if isinstance(value, str) and "\x00" in value:
            errs.append(CsvRowError(line, str(col), "contains a NUL character"))
    gateway, key, cls = get("gateway"), get("device"), get("class")
    if not valid_id(gateway):
        errs.append(CsvRowError(line, "gateway", f"{gateway!r} is not a valid gateway id"))
    if not valid_id(key):
        errs.append(CsvRowError(line, "device", f"{key!r} is not a valid device id"))
    if cls not in DEVICE_CLASSES:
        errs.append(CsvRowError(line, "class", f"{cls!r} is not one of "
                                               f"{', '.join(DEVICE_CLASSES)}"))
    address: int | None = None
    if get("address"):
        try:
            address = int(get("address"))
            if not 1 <= address <= 247:
                raise ValueError
        except ValueError:
            errs.append(CsvRowError(line, "address", f"{get('address')!r} is not a Modbus "
                                                     "address 1-247"))
    site_id: int | None = None
    if get("site_id"):
        try:
            site_id = int(get("site_id"))
        except ValueError:
            errs.append(CsvRowError(line, "site_id", f"{get('site_id')!r} is not a number"))
        else:
            site = session.get(Site, site_id)
            if site is None or not can_see(user, site.area.path, cls or None):
                errs.append(CsvRowError(line, "site_id", f"site {site_id} not found"))
    elif not user.sees_unassigned:
        errs.append(CsvRowError(line, "site_id", "required (only a city-wide admin leaves "
                                                 "devices unassigned)"))
    tags = sorted({t.strip() for t in get("tags").split(";") if t.strip()})
    return ({"line": line, "gateway": gateway, "key": key, "class": cls, "name": get("name"),
             "address": address, "site_id": site_id, "tags": tags}, errs)


def export_devices_csv(session: Session, user: Principal) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for dev in session.scalars(visible_devices(select(Device), user).order_by(Device.id)):
        writer.writerow([dev.gateway.key, dev.key, dev.device_class, dev.name,
                         "" if dev.address is None else dev.address,
                         "" if dev.site_id is None else dev.site_id, ";".join(dev.tags or [])])
    return out.getvalue()


# -- hooks for ingest (see fleet/INGEST-API.md) -------------------------------------------------
def ensure_gateway(session: Session, gateway_key: str, *, actor: str | None = None,
                   registered: bool = False) -> Gateway:
    """The gateway with MQTT id ``gateway_key``; auto-created (unassigned) if never seen."""
    gw = session.scalar(select(Gateway).where(Gateway.key == gateway_key))
    if gw is None:
        gw = Gateway(key=gateway_key, auto_created=not registered, health={})
        session.add(gw)
        session.flush()
        record(session, actor or actor_gateway(gateway_key),
               "gateway.registered" if registered else "gateway.auto_created", "gateway", gw.id,
               {"key": gateway_key})
        if not registered:
            log.info("gateway %s first heard on MQTT: registered as unassigned", gateway_key)
    return gw


def ensure_device(session: Session, gateway_key: str, device_key: str,
                  device_class: str) -> Device:
    """The device ``device_key`` under ``gateway_key``; auto-created as unassigned (no site, so
    only admins see it until someone registers it) when first heard on MQTT."""
    gw = ensure_gateway(session, gateway_key)
    dev = session.scalar(select(Device).where(Device.gateway_id == gw.id,
                                              Device.key == device_key))
    if dev is None:
        dev = Device(gateway_id=gw.id, key=device_key, device_class=device_class,
                     auto_created=True, tags=[], faults=[], status=[],
                     connectivity="unknown")
        session.add(dev)
        session.flush()
        record(session, actor_gateway(gateway_key), "device.auto_created", "device", dev.id,
               {"gateway": gateway_key, "key": device_key, "class": device_class})
        log.info("device %s/%s (%s) first heard on MQTT: registered as unassigned",
                 gateway_key, device_key, device_class)
    return dev


def _set_connectivity(session: Session, dev: Device, value: str, actor: str,
                      why: str) -> None:
    if dev.connectivity != value:
        record(session, actor, "device.connectivity", "device", dev.id,
               {"from": dev.connectivity, "to": value, "why": why})
        dev.connectivity = value


def _newer_state(dev: Device, payload: StatePayload) -> bool:
    if dev.state_epoch == payload.epoch and dev.state_seq is not None:
        return payload.seq > dev.state_seq
    return dev.state_ts is None or payload.ts >= dev.state_ts


def apply_state(session: Session, gateway_id: str, payload: StatePayload) -> Device:
    """A device's retained ``state`` from gateway ``gateway_id`` (its MQTT id).

    Older states than the last applied one (same epoch, lower seq; or an older timestamp across
    epochs, e.g. a retained message replayed on reconnect) change nothing. The device is
    online/offline as reported, unless its gateway is offline: then "unknown"."""
    dev = ensure_device(session, gateway_id, payload.device, payload.device_class)
    touch_device(session, gateway_id, payload.device, payload.ts)
    if not _newer_state(dev, payload):
        return dev
    dev.state_epoch, dev.state_seq, dev.state_ts = payload.epoch, payload.seq, payload.ts
    dev.reported_online = payload.online
    if payload.firmware is not None and payload.firmware != dev.firmware:
        record(session, actor_gateway(gateway_id), "device.firmware", "device", dev.id,
               {"from": dev.firmware, "to": payload.firmware})
        dev.firmware = payload.firmware
    dev.faults, dev.status = list(payload.faults), list(payload.status)
    gw_offline = dev.gateway.connectivity == "offline"
    target = "unknown" if gw_offline else ("online" if payload.online else "offline")
    _set_connectivity(session, dev, target, actor_gateway(gateway_id),
                      "gateway offline" if gw_offline else payload.reason or "device state")
    return dev


def apply_gateway_status(session: Session, gateway_id: str,
                         payload: GatewayStatusPayload) -> Gateway:
    """The gateway's retained status (its own report, or its Last Will "offline").

    Offline: the gateway and every device behind it become "unknown"... the gateway itself
    "offline". Online: each device goes back to what its own last state reported."""
    gw = ensure_gateway(session, gateway_id)
    if payload.ts is not None and gw.status_ts is not None and payload.ts < gw.status_ts:
        return gw  # an older status (a replayed retained message)
    if payload.ts is not None:
        gw.status_ts = payload.ts
        gw.last_seen = max(gw.last_seen or payload.ts, payload.ts)
    gw.health = dict(payload.health)
    target = "online" if payload.online else "offline"
    if gw.connectivity != target:
        record(session, actor_gateway(gateway_id), f"gateway.{target}", "gateway", gw.id,
               {"from": gw.connectivity})
        gw.connectivity = target
    devices = session.scalars(select(Device).where(Device.gateway_id == gw.id))
    for dev in devices:
        if not payload.online or dev.reported_online is None:
            want = "unknown"
        else:
            want = "online" if dev.reported_online else "offline"
        _set_connectivity(session, dev, want, actor_gateway(gateway_id),
                          f"gateway {target}")
    return gw


def touch_device(session: Session, gateway_id: str, device_id: str, ts: datetime,
                 device_class: str | None = None) -> Device | None:
    """Record that ``device_id`` under ``gateway_id`` was heard at ``ts`` (any message).

    With ``device_class`` an unknown device is auto-created (unassigned); without it, an unknown
    device is left alone and None returned. ``last_seen`` never goes backwards."""
    gw_id = session.scalar(select(Gateway.id).where(Gateway.key == gateway_id))
    dev = None
    if gw_id is not None:
        dev = session.scalar(select(Device).where(Device.gateway_id == gw_id,
                                                  Device.key == device_id))
    if dev is None:
        if device_class is None:
            return None
        dev = ensure_device(session, gateway_id, device_id, device_class)
    if dev.last_seen is None or ts > dev.last_seen:
        dev.last_seen = ts
        session.execute(update(Gateway).where(Gateway.id == dev.gateway_id)
                        .where((Gateway.last_seen.is_(None)) | (Gateway.last_seen < ts))
                        .values(last_seen=ts))
    return dev


@dataclass(frozen=True)
class DeviceContext:
    """What telemetry needs to tag a point: registry ids and the area path (None: unassigned)."""

    device_id: int
    device_class: str
    site_id: int | None
    area_id: int | None
    area_path: str | None


def device_context(session: Session, gateway_id: str, device_id: str) -> DeviceContext | None:
    row = session.execute(
        select(Device.id, Device.device_class, Device.site_id, Site.area_id, Area.path)
        .join(Gateway, Device.gateway_id == Gateway.id)
        .outerjoin(Site, Device.site_id == Site.id).outerjoin(Area, Site.area_id == Area.id)
        .where(Gateway.key == gateway_id, Device.key == device_id)).first()
    if row is None:
        return None
    return DeviceContext(*row)


def count_devices(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Device)) or 0)
