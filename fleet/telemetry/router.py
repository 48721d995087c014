"""HTTP for telemetry history: one device's field as a bucketed series, from the embedded store
(the dashboard's recent-history charts). Thin: the device is looked up through the registry
service, which answers 404 for a device outside the caller's area (existence is not leaked)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from fleet.auth.rbac import Permission, Principal
from fleet.core.deps import SessionDep, SettingsDep, require
from fleet.core.errors import NotFound
from fleet.core.types import IdPath
from fleet.registry.service import get_device
from fleet.telemetry.embedded import EmbeddedStore
from fleet.telemetry.schemas import SeriesOut, SeriesPoint

router = APIRouter(tags=["telemetry"])
Reader = Annotated[Principal, Depends(require(Permission.READ))]

_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _utc(ts: datetime) -> datetime:
    """A naive time is read as UTC; everything is clamped to the years a store can hold."""
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return min(max(ts, _EARLIEST), _LATEST)


@router.get("/devices/{device_id}/telemetry", response_model=SeriesOut)
def device_series(
    request: Request, device_id: IdPath, user: Reader, session: SessionDep,
    settings: SettingsDep,
    field: Annotated[str, Query(min_length=1, max_length=100, pattern=r'^[^"\x00]+$')],
    since: Annotated[datetime | None, Query(description="default: until - 1 h")] = None,
    until: Annotated[datetime | None, Query(description="default: now")] = None,
    step_s: Annotated[float, Query(gt=0, le=86400)] = 60.0,
) -> SeriesOut:
    """``field`` of a device over [since, until) in steps of ``step_s`` seconds (mean, min, max
    and count per step). Times without a zone are UTC. A step so small that the range would
    have more than the configured maximum of points is widened (the answer says the step it
    used); an empty range has no points."""
    device = get_device(session, user, device_id)
    store: EmbeddedStore | None = getattr(request.app.state, "telemetry_store", None)
    if store is None:
        raise NotFound("this fleet keeps telemetry in InfluxDB; query it there",
                       code="no-embedded-telemetry")
    end = _utc(until) if until is not None else datetime.now(UTC)
    start = _utc(since) if since is not None else max(_EARLIEST, end - timedelta(hours=1))
    span_s = (end - start).total_seconds()
    step_s = max(step_s, span_s / settings.telemetry.max_points, 0.001)
    points = [] if span_s <= 0 else store.series(device.key, field, _ms(start), _ms(end),
                                                   step_s, gateway=device.gateway.key)
    return SeriesOut(device_id=device_id, field=field, step_s=step_s, since=start, until=end,
                     points=[SeriesPoint(t=datetime.fromtimestamp(p.t_ms / 1000, UTC),
                                         mean=p.mean, min=p.min, max=p.max, n=p.n)
                             for p in points])
