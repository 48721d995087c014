"""The fleet application factory. Everything that holds a resource (the engine, the session
factory, background timers) is built here from one :class:`Settings`, never at import, and
released when the app shuts down."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

import fleet.models  # noqa: F401  (every table registered on Base.metadata)
from fleet.auth.router import router as auth_router
from fleet.core.db import Database
from fleet.core.errors import install_error_handlers
from fleet.core.settings import Settings

__all__ = ["API_PREFIX", "create_app"]

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


def create_app(settings: Settings, *, database: Database | None = None) -> FastAPI:
    """A fleet app on ``settings``. ``database`` lets a caller share an engine (tests,
    ``serve`` with migrations run first); otherwise one is built from ``database_url``.

    The schema is not created here: ``edgefleet fleet migrate`` (Alembic) owns it."""
    db = database or Database.from_url(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("fleet manager starting on %s", db.engine.url.render_as_string())
        try:
            yield
        finally:
            if database is None:
                db.dispose()

    app = FastAPI(title="edgefleet fleet manager", version="1", lifespan=lifespan,
                  description="Registry, alarms, access control and audit for a city's "
                              "safety sensors. Errors are RFC 9457 problem+json.")
    app.state.settings = settings
    app.state.db = db
    install_error_handlers(app)

    api = APIRouter(prefix=API_PREFIX)
    api.include_router(auth_router)

    @api.get("/health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(api)
    return app
