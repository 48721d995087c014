"""The language switcher and the keyboard, in the browser: a dispatcher switches the dashboard
to Vietnamese, it stays Vietnamese after a reload (whatever the browser's own language), and
the header's controls and an alarm's acknowledge form are reached and worked with Tab, typing
and Enter alone."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from fleet.auth.rbac import Principal
from fleet.registry import service as registry
from fleet.registry.models import Gateway
from fleet.web import STATIC_DIR
from tests.web.conftest import open_page
from tests.web.stack import FleetStack

CATALOGUE = json.loads((STATIC_DIR / "i18n.json").read_text(encoding="utf-8"))
NAV = ("nav.alarms", "nav.map", "nav.health", "nav.updates")

#: What has the keyboard focus, as a test can name it.
FOCUSED = """() => { const el = document.activeElement;
  return el ? (el.id ? "#" + el.id : el.tagName.toLowerCase() + ":" + (el.getAttribute("href")
    || el.textContent.trim().slice(0, 40))) : null; }"""


def _visible_words(page: Any) -> dict[str, Any]:
    return {"nav": page.locator("nav a .long").all_inner_texts(),
            "logout": page.inner_text("#logout"),
            "title": page.title()}


def _tab_to(page: Any, target: str, limit: int = 150) -> list[str]:
    """From the top of the page (the brand link, the first thing in it), press Tab until
    ``target`` (as FOCUSED names it) has the focus; every stop on the way."""
    page.locator("a.brand").focus()
    stops: list[str] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        stops.append(page.evaluate(FOCUSED))
        if stops[-1] == target:
            return stops
    raise AssertionError(f"Tab never reached {target}; it went through {stops}")


def test_a_dispatcher_switches_to_vietnamese_and_it_stays_after_a_reload(
        browser: Any, stack: FleetStack) -> None:
    page = open_page(browser, stack, user="pccc", locale="en-GB")
    page.wait_for_selector("section.board")
    assert page.evaluate("document.documentElement.lang") == "en"
    english = _visible_words(page)
    assert english["nav"] == [CATALOGUE["en"][k] for k in NAV]

    page.locator("#lang").click()
    page.locator("#lang").select_option("vi")
    page.wait_for_function("document.documentElement.lang === 'vi'")
    page.wait_for_selector("section.board")
    vietnamese = _visible_words(page)
    assert vietnamese["nav"] == [CATALOGUE["vi"][k] for k in NAV]
    assert vietnamese["logout"] == CATALOGUE["vi"]["common.logout"]
    assert CATALOGUE["vi"]["app.title"] in vietnamese["title"]
    assert all(vietnamese[k] != english[k] for k in english), (english, vietnamese)

    # The browser still says en-GB; the dispatcher's choice wins, across a reload.
    page.reload()
    page.wait_for_selector("#logout")
    assert page.evaluate("document.documentElement.lang") == "vi"
    assert page.locator("#lang").input_value() == "vi"
    assert _visible_words(page) == vietnamese

    # And back to English with the keyboard alone: Tab to the switcher, arrow up.
    stops = _tab_to(page, "#lang")
    assert {"#sound", "a:#/map"} <= set(stops), stops
    page.keyboard.press("ArrowUp")
    page.wait_for_function("document.documentElement.lang === 'en'")
    page.wait_for_selector("#logout")
    assert _visible_words(page) == english
    assert page.evaluate("window.__missingKeys") == []
    page.context.close()


def test_a_dispatcher_acknowledges_a_fire_with_the_keyboard_alone(
        browser: Any, stack: FleetStack) -> None:
    # A site of its own, so no other test's alarm makes a storm that folds this one away.
    admin = Principal(user_id=0, username="test", role="admin", area_path=None)
    with stack.db.transaction() as session:
        site = registry.create_site(session, admin, name="Chung cư Tôn Thất Đạm",
                                    area_id=stack.area_ids["Phường Sài Gòn"],
                                    latitude=10.7720, longitude=106.7040)
        gateway = session.scalar(select(Gateway.id).where(Gateway.key == "gw-sg"))
        assert gateway is not None
        device = registry.create_device(session, admin, gateway_id=gateway, key="kbd-1",
                                        device_class="fire", name="Đầu báo khói sảnh",
                                        address=60, site_id=site.id).id
    stack.alarm("gw-sg", "kbd-1", "fire", "smoke", location="Sảnh tầng trệt")
    [alarm] = stack.wait_for("admin", f"/alarms?device_id={device}&state=raised",
                             lambda rows: len(rows) == 1)

    page = open_page(browser, stack, user="pccc")
    page.wait_for_selector(f"#ack-{alarm['id']}")
    stops = _tab_to(page, f"#ack-{alarm['id']}")
    # On the way: the navigation, the sound switch, the language switcher, signing out.
    assert {"a:#/alarms", "a:#/map", "#sound", "#lang", "#logout"} <= set(stops), stops
    page.keyboard.type("Đã cử xe, kiểm tra tại chỗ")
    # A second alarm arrives while the comment is being typed: the board re-draws live, and
    # neither the half-written comment nor the keyboard focus may be lost.
    heat_key = stack.alarm("gw-sg", "kbd-1", "fire", "heat_rise", location="Sảnh tầng trệt")
    heat = stack.wait_for("admin", f"/alarms?device_id={device}",
                          lambda rows: any(r["alarm_key"] == heat_key for r in rows))
    heat_id = next(r["id"] for r in heat if r["alarm_key"] == heat_key)
    page.wait_for_selector(f"#ack-{heat_id}", state="attached")
    assert page.evaluate(FOCUSED) == f"#ack-{alarm['id']}"
    assert page.input_value(f"#ack-{alarm['id']}") == "Đã cử xe, kiểm tra tại chỗ"
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED) == f"button:{CATALOGUE['en']['alarms.ack']}"
    page.keyboard.press("Enter")
    done = stack.wait_for("admin", f"/alarms/{alarm['id']}",
                          lambda a: a["state"] == "acknowledged")
    assert done["ack_comment"] == "Đã cử xe, kiểm tra tại chỗ"
    history = stack.get("admin", f"/alarms/{alarm['id']}/history")
    assert ("user:pccc", "alarm.acknowledged") in {(e["actor"], e["action"]) for e in history}
    page.context.close()
