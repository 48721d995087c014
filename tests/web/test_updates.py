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


def test_a_refused_update_and_the_halt_it_causes_read_in_vietnamese(
        browser: Any, stack: FleetStack) -> None:
    """The device's own refusal and the campaign's halt are words in the officer's language,
    not codes and an English sentence; a reason the page has no words for shows as sent."""
    campaign = stack.campaign("Cảm biến nước 3.0.0", (3, 0, 0), device_class="water",
                              waves=[100], failure_threshold=0.2)
    path = f"/campaigns/{campaign['id']}"
    offered = [d for d in stack.get("admin", f"{path}/devices") if d["state"] == "sent"]
    assert offered, "no water device was offered the update"
    d = offered[0]
    stack.ota_event(d["gateway"], d["device"], campaign["id"], "3.0.0", "failed",
                    reason="device_refused", code=3, refusal="unknown_key")
    halted = stack.wait_for("admin", path, lambda c: c["state"] == "halted")
    assert halted["halt"]["code"] == "failure_rate" and halted["halt"]["failed"] == 1

    page = open_page(browser, stack, user="admin", locale="vi-VN",
                     path=f"#/updates/{campaign['id']}")
    card = f"article.campaign[data-campaign-id='{campaign['id']}']"
    page.wait_for_selector(f"{card} p.error")
    page.wait_for_selector("section.updates table")
    why = page.locator(f"{card} p.error").inner_text()
    assert "Đợt 1: 1 trên" in why and "20 %" in why and "finished" not in why, why
    rows = page.locator("section.updates table").inner_text()
    assert "Thiết bị từ chối: Ký bằng khóa không xác định" in rows
    assert "device_refused" not in rows
    shown = page.evaluate("""async () => {
        const { otaReason } = await import("./js/updates.js");
        return [otaReason("a_code_from_tomorrow"), otaReason("rolled_back"),
                otaReason("gateway refused: busy: water-2 is receiving campaign 4")];
    }""")
    assert shown == ["a_code_from_tomorrow", "Đã quay về firmware cũ",
                     "Gateway từ chối bắt đầu: Thiết bị đang nhận một bản cập nhật khác "
                     "(busy: water-2 is receiving campaign 4)"]
    assert page.evaluate("window.__missingKeys") == []
    page.context.close()
