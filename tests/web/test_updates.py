"""The Updates view in the browser: a campaign created through the API shows with a bar per
wave and its devices, in both languages; pause and cancel are offered to the roles that may,
and act; a fire-safety officer sees the campaign without the buttons."""

from __future__ import annotations

from typing import Any

from tests.web.conftest import open_page
from tests.web.stack import FleetStack


def test_an_update_campaign_shows_its_waves_and_devices_and_can_be_paused(
        browser: Any, stack: FleetStack, tmp_path: Any) -> None:
    campaign = stack.campaign("Cảm biến không khí 2.1.0", (2, 1, 0), device_class="air",
                              waves=[50, 100])
    assert [w["devices"] for w in campaign["wave_progress"]] == [1, 1]
    offered = [d for d in stack.get("admin", f"/campaigns/{campaign['id']}/devices")
               if d["state"] == "sent"]
    # wave 1's one device is offered, unless another test left an alarm at its site
    assert len(offered) == 1 or campaign["held_by_hazard"] == 1
    for d in offered:
        stack.ota_event(d["gateway"], d["device"], campaign["id"], "2.1.0", "transferring",
                        offset=2048, size=8192)
    stack.wait_for("admin", f"/campaigns/{campaign['id']}/devices",
                   lambda rows: len(offered) == 0 or any(
                       r["state"] == "transferring" for r in rows))

    page = open_page(browser, stack, user="admin", path="#/updates")
    page.goto(f"{stack.url}/ui/#/updates")
    card = f"article.campaign[data-campaign-id='{campaign['id']}']"
    page.wait_for_selector(card)
    assert page.locator(f"{card} .wave").count() == 2
    assert "Cảm biến không khí 2.1.0" in page.locator(card).inner_text()
    page.screenshot(path=str(tmp_path / "updates.png"), full_page=True)

    # its devices, with the phase and the bytes the device holds
    page.click(f"{card} h3 a")
    page.wait_for_selector("section.updates table")
    text = page.locator("section.updates table").inner_text()
    assert "air-" in text
    if offered:
        assert "Transferring" in text
        assert page.locator("section.updates table progress").count() >= 1

    # pause from the page: the API says paused, the button turns into resume
    page.click(f"{card} button[data-action='pause']")
    page.wait_for_selector(f"{card}[data-state='paused'] button[data-action='resume']")
    assert stack.get("admin", f"/campaigns/{campaign['id']}")["state"] == "paused"
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"{card} button[data-action='cancel']")
    page.wait_for_selector(f"{card}[data-state='cancelled']")
    assert page.evaluate("window.__missingKeys") == []
    page.context.close()

    # Vietnamese, as a fire-safety officer: the campaign is there, the buttons are not
    page = open_page(browser, stack, user="pccc", locale="vi-VN", path="#/updates")
    page.goto(f"{stack.url}/ui/#/updates")
    page.wait_for_selector(card)
    assert "Cập nhật phần mềm" in page.locator("section.updates h2").inner_text()
    assert page.locator(f"{card} button").count() == 0
    assert page.evaluate("window.__missingKeys") == []
    page.context.close()
