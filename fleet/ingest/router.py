"""HTTP for ingest: a device's delivery accounting (per epoch: produced, received, duplicates,
declared drops, gaps) for users who may see the device, and the Prometheus ``/metrics`` text."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

from fleet.auth.rbac import Permission, Principal
from fleet.core.deps import SessionDep, require
from fleet.core.types import IdPath
from fleet.ingest.accounting import SeqSet, StreamState
from fleet.ingest.metrics import IngestMetrics, render
from fleet.ingest.models import IngestStream
from fleet.ingest.schemas import DeliveryOut, StreamOut
from fleet.registry.service import get_device

router = APIRouter(tags=["ingest"])
metrics_router = APIRouter(tags=["meta"])
Reader = Annotated[Principal, Depends(require(Permission.READ))]
#: /metrics spans every area (device names, gateways): admins only; a Prometheus scraper uses an
#: admin's API token (``authorization: {credentials: ...}`` in its scrape config).
Operator = Annotated[Principal, Depends(require(Permission.READ_AUDIT))]


@router.get("/devices/{device_id}/delivery", response_model=DeliveryOut)
def device_delivery(device_id: IdPath, user: Reader, session: SessionDep) -> DeliveryOut:
    """Whether everything the device's gateway produced arrived: one row per epoch."""
    device = get_device(session, user, device_id)
    rows = session.scalars(select(IngestStream).where(
        IngestStream.gateway == device.gateway.key, IngestStream.device == device.key)
        .order_by(IngestStream.first_at))
    streams = []
    for row in rows:
        state = StreamState(SeqSet.from_json(row.seen), SeqSet.from_json(row.dropped),
                            row.duplicates)
        totals = state.totals()
        streams.append(StreamOut(
            epoch=row.epoch, produced=totals.produced, received=totals.received,
            duplicates=totals.duplicates, declared_drops=totals.declared_drops,
            gaps=totals.gaps, balanced=totals.balanced, gap_ranges=state.gap_ranges()[:100],
            first_at=row.first_at, updated_at=row.updated_at))
    return DeliveryOut(device_id=device_id, gateway=device.gateway.key, device=device.key,
                       streams=streams)


@metrics_router.get("/metrics", response_class=PlainTextResponse)
def prometheus(request: Request, _user: Operator, session: SessionDep) -> PlainTextResponse:
    """Prometheus text: this process's ingest counters, delivery accounting and alarm counts."""
    metrics: IngestMetrics | None = getattr(request.app.state, "ingest_metrics", None)
    text = render(metrics, session) + _alarm_lines(session)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


def _alarm_lines(session: SessionDep) -> str:
    from fleet.alarms.service import alarm_counts

    lines = ["# HELP edgefleet_alarms Alarms by state and device class.",
             "# TYPE edgefleet_alarms gauge"]
    for (state, device_class), n in sorted(alarm_counts(session).items()):
        lines.append(f'edgefleet_alarms{{state="{state}",class="{device_class}"}} {n}')
    return "\n".join(lines) + "\n"
