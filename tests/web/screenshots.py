"""Screenshots of every dashboard page, in English and Vietnamese, on a desktop (1440×900), a
phone (390×844) and an operations-centre wall screen (1920×1080), from the real fleet
(:mod:`tests.web.stack`).

The browser suite takes them into a temporary directory on every run (``test_pages.py``); to
refresh the committed ones in ``docs/screenshots/``::

    .venv/bin/python -m tests.web.screenshots docs/screenshots
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.web.stack import FleetStack

PAGES = ("alarms", "map", "device", "health", "updates")
VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844},
             "wall": {"width": 1920, "height": 1080}}
LANGUAGES = {"en": "en-GB", "vi": "vi-VN"}


def stage(stack: FleetStack) -> None:
    """Alarms worth looking at: smoke at the market, a flood rising, a pre-alarm at the theatre;
    and a firmware update half-way."""
    # A fire update rolling out in three waves, started before the alarms: wave 1 confirmed,
    # wave 2 transferring; what is left waits at sites with a fire alarm.
    c = stack.campaign("Đầu báo khói 1.5.0", (1, 5, 0), waves=[25, 50, 100])
    for d in stack.get("admin", f"/campaigns/{c['id']}/devices"):
        if d["state"] == "sent":
            stack.ota_event(d["gateway"], d["device"], c["id"], "1.5.0", "confirmed")
    stack.wait_for("admin", f"/campaigns/{c['id']}",
                   lambda v: v["held_by_hazard"] > 0 or v["current_wave"] >= 2, timeout=20)
    moving = [d for d in stack.get("admin", f"/campaigns/{c['id']}/devices")
              if d["state"] == "sent"]
    for d in moving:
        stack.ota_event(d["gateway"], d["device"], c["id"], "1.5.0", "transferring",
                        offset=61_440, size=143_360)
    stack.wait_for("admin", f"/campaigns/{c['id']}/devices", lambda rows: sum(
        r["state"] == "transferring" for r in rows) == len(moving))
    stack.alarm("gw-bt", "fire-1", "fire", "smoke", location="Tầng 2, khu ẩm thực")
    stack.alarm("gw-sg", "fire-4", "fire", "prealarm", severity="warning", location="Sân khấu")
    stack.alarm("gw-sg", "flood-1", "flood", "stage2", severity="major")
    stack.wait_for("admin", "/alarms?open_only=true", lambda rows: len(rows) >= 3)


def shoot(browser: Any, stack: FleetStack, outdir: Path) -> list[Path]:
    """Every page × language × viewport as PNG into ``outdir``; returns the files. Each page
    is checked on the way: no string missing from the catalogue, nothing fetched from
    anywhere but the fleet itself."""
    from tests.web.conftest import open_page

    outdir.mkdir(parents=True, exist_ok=True)
    files = []
    device = stack.device_ids["fire-1"]
    for lang, locale in LANGUAGES.items():
        for form, viewport in VIEWPORTS.items():
            page = open_page(browser, stack, viewport=viewport, locale=locale)
            assert page.evaluate("document.documentElement.lang") == lang
            path = outdir / f"login-{lang}-{form}.png"
            page.screenshot(path=str(path))
            files.append(path)
            from tests.web.conftest import sign_in

            sign_in(page, "admin")
            for name in PAGES:
                page.goto(f"{stack.url}/ui/#/{name}" + (f"/{device}" if name == "device" else ""))
                ready = {"alarms": "article.alarm", "map": ".leaflet-marker-icon",
                         "device": "figure.chart canvas", "health": "section.health table",
                         "updates": "section.updates article.campaign"}[name]
                page.wait_for_selector(ready)
                page.wait_for_load_state("networkidle")
                if name == "device":  # every command named for what it did
                    page.wait_for_selector(".cmd-log li")
                    log = page.locator(".cmd-log").inner_text()
                    assert "undefined" not in log, f"device page ({lang}, {form}): {log}"
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= viewport["width"], f"{name} ({lang}, {form}) is {width} px wide"
                path = outdir / f"{name}-{lang}-{form}.png"
                page.screenshot(path=str(path), full_page=name != "map")
                files.append(path)
            missing = page.evaluate("window.__missingKeys")
            assert not missing, f"strings missing from the catalogue: {missing}"
            outside = [u for u in page.requests if not u.startswith(stack.url)
                       and not u.startswith(("data:", "blob:"))]
            assert not outside, f"the page fetched from outside the fleet: {outside}"
            page.context.close()
    return files


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS

    outdir = Path(argv[0]) if argv else Path("docs/screenshots")
    with tempfile.TemporaryDirectory(prefix="edgefleet-shots-") as work:
        stack = FleetStack(Path(work))
        stack.start()
        try:
            stack.populate()
            stage(stack)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    for f in shoot(browser, stack, outdir):
                        print(f)
                finally:
                    browser.close()
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
