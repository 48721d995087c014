"""HTTP for telemetry history: one device's field as a bucketed series, from the embedded store
(the dashboard's recent-history charts). Thin: the device is looked up through the registry
service, which answers 404 for a device outside the caller's area (existence is not leaked)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from fleet.auth.rbac import Permission, Principal
from fleet.core.deps import SessionDep, SettingsDep, require
from fleet.core.errors import FleetError, NotFound
from fleet.registry.service import get_device
from fleet.telemetry.embedded import EmbeddedStore
from fleet.telemetry.schemas import SeriesOut, SeriesPoint

router = APIRouter(tags=["telemetry"])
Reader = Annotated[Principal, Depends(require(Permission.READ))]


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


@router.get("/devices/{device_id}/telemetry", response_model=SeriesOut)
def device_series(
    request: Request, device_id: int, user: Reader, session: SessionDep, settings: SettingsDep,
    field: Annotated[str, Query(min_length=1, max_length=100, pattern=r'^[^"]+$')],
    since: Annotated[datetime | None, Query(description="default: until - 1 h")] = None,
    until: Annotated[datetime | None, Query(description="default: now")] = None,
    step_s: Annotated[float, Query(gt=0, le=86400)] = 60.0,
) -> SeriesOut:
    """``field`` of a device over [since, until) in steps of ``step_s`` seconds (mean, min,
    max and count per step)."""
    device = get_device(session, user, device_id)
    store: EmbeddedStore | None = getattr(request.app.state, "telemetry_store", None)
    if store is None:
        raise NotFound("this fleet keeps telemetry in InfluxDB; query it there",
                       code="no-embedded-telemetry")
    end = until or datetime.now(UTC)
    start = since or end - timedelta(hours=1)
    if start.tzinfo is None or end.tzinfo is None:
        raise FleetError("since and until need a time zone (RFC 3339)", status=422,
                         code="naive-time")
    if end <= start:
        raise FleetError("until must be after since", status=422, code="empty-range")
    if (end - start).total_seconds() / step_s > settings.telemetry.max_points:
        raise FleetError(f"more than {settings.telemetry.max_points} points: use a larger "
                         "step_s", status=422, code="too-many-points")
    points = store.series(device.key, field, _ms(start), _ms(end), step_s,
                          gateway=device.gateway.key)
    return SeriesOut(device_id=device_id, field=field, step_s=step_s, since=start, until=end,
                     points=[SeriesPoint(t=datetime.fromtimestamp(p.t_ms / 1000, UTC),
                                         mean=p.mean, min=p.min, max=p.max, n=p.n)
                             for p in points])
