"""The fleet application factory. Everything that holds a resource (the engine, the session
factory, background timers) is built here from one :class:`Settings`, never at import, and
released when the app shuts down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

import fleet.models  # noqa: F401  (every table registered on Base.metadata)
from fleet.alarms.router import router as alarms_router
from fleet.alarms.timer import run_escalation_timer
from fleet.audit.router import router as audit_router
from fleet.auth.router import router as auth_router
from fleet.control.router import router as control_router
from fleet.core.db import Database
from fleet.core.errors import install_error_handlers, problem_responses
from fleet.core.settings import Settings
from fleet.ingest.metrics import IngestMetrics
from fleet.ingest.process import embedded_store, start_in_app
from fleet.ingest.router import metrics_router
from fleet.ingest.router import router as ingest_router
from fleet.notify.feed import AlarmFeed
from fleet.notify.router import router as notify_router
from fleet.notify.sealed import SecretBox
from fleet.notify.webhook_router import router as webhook_router
from fleet.notify.webhooks import run_webhook_worker
from fleet.ota.router import router as ota_router
from fleet.ota.timer import run_campaign_timer
from fleet.registry.router import router as registry_router
from fleet.telemetry.router import router as telemetry_router
from fleet.web import mount_dashboard
from fleet.web import router as dashboard_router

__all__ = ["API_PREFIX", "create_app"]

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


def create_app(settings: Settings, *, database: Database | None = None) -> FastAPI:
    """A fleet app on ``settings``. ``database`` lets a caller share an engine (tests,
    ``serve`` with migrations run first); otherwise one is built from ``database_url``.

    The schema is not created here: ``edgefleet fleet migrate`` (Alembic) owns it."""
    db = database or Database.from_url(settings.database_url)
    feed = AlarmFeed(db, settings.push_poll_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("fleet manager starting on %s", db.engine.url.render_as_string())
        tasks: list[asyncio.Task[None]] = [
            asyncio.create_task(feed.run(), name="alarm-feed")]
        if settings.run_timers:
            tasks.append(asyncio.create_task(run_escalation_timer(db, settings, feed.poke),
                                             name="escalation-timer"))
            box = SecretBox(settings.secret_key.get_secret_value())
            tasks.append(asyncio.create_task(run_webhook_worker(db, box, settings.webhook_poll_s),
                                             name="webhook-worker"))
            tasks.append(asyncio.create_task(run_campaign_timer(db, settings),
                                             name="campaign-timer"))
        # ingest/telemetry start here
        app.state.telemetry_store = embedded_store(settings)
        ingest = start_in_app(settings, db, app.state.ingest_metrics, feed.poke)
        try:
            yield
        finally:
            if ingest is not None:
                await asyncio.to_thread(ingest.stop)
            if app.state.telemetry_store is not None:
                app.state.telemetry_store.close()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if database is None:
                db.dispose()

    app = FastAPI(title="edgefleet fleet manager", version="1", lifespan=lifespan,
                  description="Registry, alarms, access control and audit for a city's "
                              "safety sensors. Errors are RFC 9457 problem+json.")
    app.state.settings = settings
    app.state.db = db
    app.state.alarm_feed = feed
    app.state.ingest_metrics = IngestMetrics()
    app.state.telemetry_store = None
    install_error_handlers(app)

    # Every route may answer these as problem+json; declared so the OpenAPI says so.
    api = APIRouter(prefix=API_PREFIX,
                    responses=problem_responses(400, 401, 403, 404, 409, 422, 423, 500))
    for router in (auth_router, registry_router, alarms_router, audit_router, notify_router,
                   webhook_router, control_router, telemetry_router, ingest_router,
                   ota_router, dashboard_router):
        api.include_router(router)

    @api.get("/health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(api)
    app.include_router(metrics_router, responses=problem_responses(401, 403, 500))
    mount_dashboard(app)
    return app
