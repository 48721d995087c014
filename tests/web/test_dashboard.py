"""The operations-centre dashboard in a real browser (Debian Chromium, headless), against the
real fleet: alarms enter as contract payloads on a real Mosquitto, go through the fleet's ingest
and its server-sent event feed, and must appear in the page without a reload."""

from __future__ import annotations

import json
from typing import Any

from fleet.web import STATIC_DIR
from tests.web.conftest import PHONE, open_page
from tests.web.stack import FleetStack


def _row(page: Any, alarm_id: int) -> Any:
    return page.locator(f"article.alarm[data-alarm-id='{alarm_id}']")


def test_a_fire_alarm_appears_live_is_acknowledged_by_fire_safety_and_stays_hidden_from_utility(
        browser: Any, stack: FleetStack) -> None:
    fire = open_page(browser, stack, user="pccc")
    utility = open_page(browser, stack, user="capnuoc")
    phone = open_page(browser, stack, user="pccc", viewport=PHONE)
    for page in (fire, utility, phone):
        page.wait_for_selector("span.live.on")
    # Sound is off until someone in the room allows it (here: on the desk, not on the phone).
    fire.click("#sound")
    assert fire.get_attribute("#sound", "aria-pressed") == "true"
    test_tone = fire.evaluate("window.__tones")
    assert test_tone == 1

    # Smoke at the market: published the way the Bến Thành gateway sends it.
    stack.alarm("gw-bt", "fire-2", "fire", "smoke", location="Kho tầng trệt")
    alarm = stack.wait_for("admin", "/alarms?class=fire&state=raised",
                           lambda rows: any(r["device_id"] == stack.device_ids["fire-2"]
                                            for r in rows))
    alarm_id = next(r["id"] for r in alarm if r["device_id"] == stack.device_ids["fire-2"])

    # Live on the fire-safety desk and on the phone, no reload.
    row = _row(fire, alarm_id)
    row.wait_for(timeout=10_000)
    assert "Smoke" in row.inner_text() and "Kho tầng trệt" in row.inner_text()
    _row(phone, alarm_id).wait_for(timeout=10_000)
    # A new fire alarm sounds where sound was allowed, and only there.
    fire.wait_for_function("window.__tones >= 2")
    assert phone.evaluate("window.__tones") == 0
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    # A water alarm in the utility user's ward proves the utility page is live too ...
    water_key = stack.alarm("gw-bt", "water-1", "water", "chlorine_low", severity="warning")
    water = stack.wait_for("admin", "/alarms?class=water",
                           lambda rows: any(r["alarm_key"] == water_key for r in rows))
    water_id = next(r["id"] for r in water if r["alarm_key"] == water_key)
    _row(utility, water_id).wait_for(timeout=10_000)
    # ... and still the fire alarm is not on it, nor can it be acknowledged from it.
    assert _row(utility, alarm_id).count() == 0
    board = utility.inner_text("main")
    assert "Kho tầng trệt" not in board and "Smoke" not in board and "Fire" not in board
    refused = utility.evaluate(
        """async (id) => (await fetch(`/api/v1/alarms/${id}/acknowledge`, {method: "POST",
            headers: {"Content-Type": "application/json",
                      Authorization: `Bearer ${sessionStorage.getItem("edgefleet.token")}`},
            body: JSON.stringify({comment: "not mine"})})).status""", alarm_id)
    assert refused == 404

    # Fire safety acknowledges with a comment, in the page.
    row.locator("input[name=comment]").fill("Đội PCCC phường đang đến")
    row.locator("form.ack button[type=submit]").click()
    # It moves below unacknowledged alarms (the market's water alarm now leads the site's
    # storm group, so it may be folded away): attached, not necessarily in view.
    acked = f"article.alarm.st-acknowledged[data-alarm-id='{alarm_id}']"
    fire.wait_for_selector(acked, state="attached")
    # The phone follows, live.
    phone.wait_for_selector(acked, state="attached")

    # The audit log says who and when; the page's history shows the same.
    audit = stack.get("admin", f"/audit?entity_type=alarm&entity_id={alarm_id}")
    ack = [e for e in audit if e["action"] == "alarm.acknowledged"]
    assert len(ack) == 1
    assert ack[0]["actor"] == "user:pccc"
    assert ack[0]["detail"]["comment"] == "Đội PCCC phường đang đến"
    assert ack[0]["at"]
    acked_row = _row(fire, alarm_id)
    if not acked_row.is_visible():
        fire.locator("details.storm", has=acked_row).locator("> summary").click()
    acked_row.locator("details.history summary").click()
    acked_row.locator("ol.history li", has_text="acknowledged").wait_for()
    assert "user:pccc" in acked_row.locator("ol.history").inner_text()
    # A new alarm re-draws the board live: the history being read stays open.
    heat_key = stack.alarm("gw-bt", "fire-2", "fire", "heat_rise", location="Kho tầng trệt")
    heat = stack.wait_for("admin", "/alarms?class=fire",
                          lambda rows: any(r["alarm_key"] == heat_key for r in rows))
    _row(fire, next(r["id"] for r in heat if r["alarm_key"] == heat_key)).wait_for(
        state="attached", timeout=10_000)
    _row(fire, alarm_id).locator("details.history[open] ol.history li",
                                 has_text="acknowledged").first.wait_for(state="attached",
                                                                         timeout=5_000)

    for page in (fire, utility, phone):
        page.context.close()


def test_the_device_page_charts_the_last_hour_with_its_thresholds(browser: Any,
                                                                  stack: FleetStack) -> None:
    page = open_page(browser, stack, user="pccc",
                     path=f"#/device/{stack.device_ids['fire-1']}")
    chart = page.locator("figure.chart[data-field='smoke']")
    chart.locator("canvas").wait_for()
    assert int(chart.get_attribute("data-points") or 0) >= 30
    # Firmware and delivery accounting from the registry and ingest.
    facts = page.inner_text("dl.facts")
    assert "1.4.2" in facts
    # The gateway's Modbus counters for this node, from the gateway's last status.
    assert "rs485-1: 1,200 polls, 0 timeouts" in facts
    accounting = page.locator("section.device table", has_text="Produced").inner_text()
    # Two seqs skipped on the way (never sent, never declared): counted as a gap of 2.
    _epoch, produced, received, _dups, declared, gaps = accounting.splitlines()[1].split("\t")
    assert int(produced) - int(received) == 2 and int(gaps) == 2 and int(declared) == 0
    page.context.close()


def test_the_device_page_says_its_status_flags_in_words_in_both_languages(
        browser: Any, stack: FleetStack) -> None:
    # The pressure station reports a loop fault: status bit "fault", fault "pressure_loop".
    catalogue = json.loads((STATIC_DIR / "i18n.json").read_text(encoding="utf-8"))
    for lang, locale in (("en", "en-GB"), ("vi", "vi-VN")):
        page = open_page(browser, stack, user="admin", locale=locale,
                         path=f"#/device/{stack.device_ids['water-2']}")
        words = catalogue[lang]
        facts = page.locator("dl.facts")
        facts.wait_for()
        status = facts.locator(f"dt:text-is('{words['device.status']}') + dd").inner_text()
        faults = facts.locator(f"dt:text-is('{words['device.faults']}') + dd").inner_text()
        assert (status, faults) == (words["status.fault"], words["fault.pressure_loop"]), lang
        page.context.close()
