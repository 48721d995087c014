"""Storm groups on the alarm board, in a real browser: one detector's own alarms (pre-alarm,
then smoke) are one incident in the fleet (one ``group_id``) but not a storm, so the smoke alarm
is never folded under its own pre-alarm; a second detector on the floor makes a storm, folded
under its most urgent alarm, whose line names the devices folded there."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from fleet.auth.rbac import Principal
from fleet.registry import service as registry
from fleet.registry.models import Gateway
from tests.web.conftest import open_page
from tests.web.stack import FleetStack


def _row(page: Any, alarm_id: int) -> Any:
    return page.locator(f"article.alarm[data-alarm-id='{alarm_id}']")


def _raised(stack: FleetStack, device_id: int, alarm_type: str) -> dict[str, Any]:
    rows = stack.wait_for("admin", f"/alarms?device_id={device_id}&state=raised",
                          lambda rows: any(r["type"] == alarm_type for r in rows))
    return next(r for r in rows if r["type"] == alarm_type)


def test_one_detectors_alarms_stay_rows_and_a_storm_names_the_devices_it_folds(
        browser: Any, stack: FleetStack) -> None:
    admin = Principal(user_id=0, username="test", role="admin", area_path=None)
    with stack.db.transaction() as session:
        site = registry.create_site(session, admin, name="Tòa nhà Sài Gòn Center",
                                    area_id=stack.area_ids["Phường Bến Thành"],
                                    latitude=10.7727, longitude=106.7003)
        gateway = session.scalar(select(Gateway.id).where(Gateway.key == "gw-bt"))
        assert gateway is not None
        riser = {key: registry.create_device(session, admin, gateway_id=gateway, key=key,
                                             device_class="fire", name=name, address=address,
                                             site_id=site.id).id
                 for key, name, address in (("riser-40", "Đầu báo khói tầng 40", 40),
                                            ("riser-41", "Đầu báo khói tầng 41", 41))}
    page = open_page(browser, stack, user="pccc")
    page.wait_for_selector("span.live.on")

    # One detector: the pre-alarm, then the smoke alarm. The fleet keeps them in one group.
    stack.alarm("gw-bt", "riser-40", "fire", "prealarm", severity="warning")
    pre = _raised(stack, riser["riser-40"], "prealarm")
    stack.alarm("gw-bt", "riser-40", "fire", "smoke")
    smoke = _raised(stack, riser["riser-40"], "smoke")
    assert smoke["group_id"] == pre["id"]
    # ... but one detector is not a storm: both are rows in view, neither folded away.
    for alarm in (smoke, pre):
        _row(page, alarm["id"]).wait_for(state="visible", timeout=10_000)
        assert page.locator("details.storm", has=_row(page, alarm["id"])).count() == 0

    # A second detector on the floor: now it is a storm. Its newest fire alarm leads in view;
    # the line it folds under says which devices are there.
    stack.alarm("gw-bt", "riser-41", "fire", "smoke")
    second = _raised(stack, riser["riser-41"], "smoke")
    assert second["group_id"] == pre["id"]
    storm = page.locator("details.storm", has=_row(page, pre["id"]))
    storm.wait_for(state="attached", timeout=10_000)
    assert _row(page, second["id"]).is_visible()
    summary = storm.locator("> summary").inner_text()
    assert "2 more alarms" in summary and "Đầu báo khói tầng 40" in summary
    assert not _row(page, smoke["id"]).is_visible()
    storm.locator("> summary").click()
    _row(page, smoke["id"]).wait_for(state="visible")
    page.context.close()
