"""The operations-centre dashboard: static pages and plain JavaScript modules served by the fleet
app itself, on a closed network (every library vendored under ``static/vendor/`` by
``scripts/vendor-frontend.sh``; nothing is fetched from the internet at run time).

:func:`mount_dashboard` serves the single page at ``/ui/`` (``/`` redirects there); the page
talks to the same ``/api/v1`` every other client uses, plus :mod:`fleet.web.api`, which shapes
one answer per page. Strings live in one catalogue, ``static/i18n.json`` (English and
Vietnamese; a test fails when a key is missing in either).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from fleet.web.api import router

__all__ = ["STATIC_DIR", "mount_dashboard", "router"]

STATIC_DIR = Path(__file__).parent / "static"


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/ui/`` and send ``/`` there."""

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")
