"""The board's live feed survives the fleet going away: the fleet app is restarted under an open
dashboard (its own stack here, so the shared one is never restarted), the header says the feed
is down while it is, and an alarm raised during the outage appears without a reload once the
fleet is back, through the event stream's Last-Event-ID replay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import open_page
from tests.web.stack import FleetStack

FEED = "**/api/v1/notify/alarms*"


@pytest.fixture(scope="module")
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetStack]:
    fleet = FleetStack(tmp_path_factory.mktemp("web-restart"))
    fleet.start()
    try:
        yield fleet
    finally:
        fleet.stop()


def _alarm_id(stack: FleetStack, key: str) -> int:
    rows = stack.wait_for("admin", "/alarms?open_only=true",
                          lambda rs: any(r["alarm_key"] == key for r in rs), timeout=20)
    return next(r["id"] for r in rows if r["alarm_key"] == key)


@pytest.mark.parametrize("seen_an_event_before", [False, True],
                         ids=["quiet-board", "after-an-event"])
def test_an_alarm_raised_while_the_fleet_restarts_appears_without_a_reload(
        browser: Any, restartable: FleetStack, seen_an_event_before: bool,
        tmp_path: Path) -> None:
    stack = restartable
    page = open_page(browser, stack, user="pccc")
    page.wait_for_selector("span.live.on")
    page.evaluate("window.__sameDocument = true")
    tag = "a" if seen_an_event_before else "q"
    if seen_an_event_before:
        first = _alarm_id(stack, stack.alarm("gw-bt", "fire-1", "fire", f"smoke_{tag}"))
        page.wait_for_selector(f"article.alarm[data-alarm-id='{first}']", state="attached")

    stack.stop_app()
    page.wait_for_selector("span.live.off", timeout=10_000)
    # Hold the browser off until the fleet has stored the alarm: then it can only come back
    # through the replay of what the stream missed, not as a fresh push.
    page.route(FEED, lambda route: route.abort("connectionrefused"))
    key = stack.alarm("gw-sg", "fire-4", "fire", f"heat_rise_{tag}", location="Sân khấu")
    stack.start_app()
    alarm = _alarm_id(stack, key)
    assert page.locator("span.live.off").count() == 1  # still disconnected
    page.unroute(FEED)

    page.wait_for_selector("span.live.on", timeout=15_000)
    row = page.locator(f"article.alarm[data-alarm-id='{alarm}']")
    row.wait_for(state="attached", timeout=15_000)
    assert "Sân khấu" in (row.text_content() or "")
    assert page.evaluate("window.__sameDocument") is True  # no reload
    page.context.close()
