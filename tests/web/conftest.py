"""Browser-test fixtures: one real fleet stack (Mosquitto, fleet app + ingest, seeded registry;
:mod:`tests.web.stack`) and one headless Debian Chromium driven by Playwright, both per session,
so the whole web suite pays for a browser and a server once.

Chromium is the system's (``/usr/bin/chromium``, scripts/system-deps.sh); ``playwright install``
is never needed (it would download a browser, which a closed network cannot).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.stack import PASSWORDS, FleetStack

CHROMIUM = os.environ.get("EDGEFLEET_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetStack]:
    fleet = FleetStack(tmp_path_factory.mktemp("web-stack"))
    fleet.start()
    try:
        fleet.populate()
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run scripts/system-deps.sh (Debian "
                    "package chromium)", pytrace=False)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: Any, stack: FleetStack, *, viewport: dict[str, int] = DESKTOP,
              locale: str = "en-GB", user: str | None = None, path: str = "#/alarms") -> Any:
    """A fresh browser context (its own session) on the dashboard, signed in as ``user``.

    Every request the page makes is recorded on ``page.requests`` (the closed-network check)."""
    context = browser.new_context(viewport=viewport, locale=locale)
    # Count the tones the page starts (Web Audio has no other observable output headless).
    context.add_init_script("""window.__tones = 0;
        const start = OscillatorNode.prototype.start;
        OscillatorNode.prototype.start = function (...args) {
          window.__tones += 1; return start.apply(this, args); };""")
    page = context.new_page()
    page.requests = []
    page.on("request", lambda r: page.requests.append(r.url))
    page.goto(f"{stack.url}/ui/{path}")
    page.wait_for_selector("body[data-ready='1']")
    if user is not None:
        sign_in(page, user)
    return page


def sign_in(page: Any, user: str) -> None:
    page.fill("#username", user)
    page.fill("#password", PASSWORDS[user])
    page.click("form.login button[type=submit]")
    page.wait_for_selector("#logout")
