"""The RBAC matrix: every role x every endpoint x inside/outside the user's area -> the expected
HTTP status, written out as a table (not derived from the code under test). Any cell that
answers more than the table allows is a privilege escalation; the test reports every mismatch.

Users (tests/fleet/conftest.py World): admin (whole city); ward-admin (an admin scoped to ward A:
admins are area-scoped too, the city-wide one is scoped to the root); technician, utility,
fire-safety, viewer and utility-fire (utility granted fire) scoped to ward A. "in" targets
ward A, "out" targets ward B. Fire devices and alarms are a third column: a utility user without
the grant must not see them even in their own ward.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from fleet.alarms import service as alarms
from fleet.auth.rbac import Principal
from tests.fleet.conftest import World, alarm_payload

ROLES = ("admin", "technician", "utility", "fire-safety", "viewer", "utility-fire", "ward-admin")
_n = itertools.count(1)
_ROOT = Principal(user_id=0, username="setup", role="admin", area_path=None)


def row(admin: int, technician: int, utility: int, fire_safety: int, viewer: int,
        utility_fire: int | None = None, *, ward_admin: int | None = None) -> dict[str, int]:
    """Expected statuses; ward A's admin answers like the city admin unless given."""
    return dict(zip(ROLES, (admin, technician, utility, fire_safety, viewer,
                            utility if utility_fire is None else utility_fire,
                            admin if ward_admin is None else ward_admin), strict=True))


ALL = row(200, 200, 200, 200, 200)
ADMIN_ONLY = row(200, 403, 403, 403, 403)
ADMIN_ONLY_201 = row(201, 403, 403, 403, 403)
#: What belongs to no area or to all (audit, metrics, webhooks): the city-wide admin's only.
ROOT_ONLY = row(200, 403, 403, 403, 403, ward_admin=403)
ROOT_ONLY_201 = row(201, 403, 403, 403, 403, ward_admin=403)
HIDDEN = row(200, 404, 404, 404, 404, ward_admin=404)  # outside the area: does not exist


@dataclass
class Case:
    method: str
    route: str  # the route's path template, to check every route is covered
    target: str  # "in", "out", "fire" (a fire object in ward A) or "-"
    expected: dict[str, int]
    request: Callable[[World, Any], tuple[str, dict[str, Any]]]


def fixed(path: str, **kw: Any) -> Callable[[World, Any], tuple[str, dict[str, Any]]]:
    return lambda w, db: (path, kw)


def new_alarm(device: str, gateway: str, cls: str) -> Callable[[World, Any], int]:
    def make(w: World, db: Any) -> int:
        with db.transaction() as s:
            return alarms.apply_alarm(s, gateway, alarm_payload(
                device, f"{device}:t:1:{next(_n)}", cls=cls)).id
    return make


def new_webhook(db: Any) -> int:
    from fleet.notify.sealed import SecretBox
    from fleet.notify.webhooks import create_subscription

    if db is None:  # the no-token test only needs a path
        return 1
    with db.transaction() as s:
        return create_subscription(s, SecretBox("k" * 40), name="m",
                                   url="http://127.0.0.1:9/x", classes=[], secret=None,
                                   actor="test")[0].id


def fire_safety_notification(w: World, db: Any) -> tuple[str, dict[str, Any]]:
    """An escalation addressed to the fire-safety user: reading it is theirs alone."""
    from sqlalchemy import select

    from fleet.audit.service import record
    from fleet.auth.models import User
    from fleet.notify.models import UserNotification

    if db is None:  # the no-token test only needs a path
        return "/api/v1/notify/inbox/1/read", {}
    alarm_id = ALARM_FIRE(w, db)
    with db.transaction() as s:
        entry = record(s, "system", "alarm.escalated", "alarm", alarm_id,
                       {"level": 1, "role": "fire-safety"})
        s.flush()
        owner = s.scalar(select(User.id).where(User.username == "fire-safety"))
        note = UserNotification(user_id=owner, event_id=entry.id, alarm_id=alarm_id,
                                kind="escalation", role="fire-safety", level=1)
        s.add(note)
        s.flush()
        return f"/api/v1/notify/inbox/{note.id}/read", {}


ALARM_IN = new_alarm("flood-a", "gw-a", "flood")
ALARM_OUT = new_alarm("water-b", "gw-b", "water")
ALARM_FIRE = new_alarm("fire-a", "gw-a", "fire")


def alarm_call(make: Callable[[World, Any], int], suffix: str, method_body: bool = False):  # type: ignore[no-untyped-def]
    def req(w: World, db: Any) -> tuple[str, dict[str, Any]]:
        kw: dict[str, Any] = {"json": {"comment": "matrix"}} if method_body else {}
        return f"/api/v1/alarms/{make(w, db)}{suffix}", kw
    return req


def device_body(site: str) -> Callable[[World, Any], tuple[str, dict[str, Any]]]:
    def req(w: World, db: Any) -> tuple[str, dict[str, Any]]:
        return "/api/v1/devices", {"json": {
            "gateway_id": w.gw_a if site == "a" else w.gw_b, "key": f"m-{next(_n)}",
            "device_class": "air", "site_id": w.site_a if site == "a" else w.site_b}}
    return req


def csv_body(site: str) -> Callable[[World, Any], tuple[str, dict[str, Any]]]:
    def req(w: World, db: Any) -> tuple[str, dict[str, Any]]:
        sid = w.site_a if site == "a" else w.site_b
        text = f"gateway,device,class,site_id\ngw-a,csv-{next(_n)},air,{sid}\n"
        return "/api/v1/devices/import", {"content": text.encode(),
                                          "headers": {"Content-Type": "text/csv"}}
    return req


def site_body(site: str) -> Callable[[World, Any], tuple[str, dict[str, Any]]]:
    return lambda w, db: ("/api/v1/sites", {"json": {
        "name": f"s{next(_n)}", "area_id": w.ward_a if site == "a" else w.ward_b}})


def gateway_body(site: str) -> Callable[[World, Any], tuple[str, dict[str, Any]]]:
    return lambda w, db: ("/api/v1/gateways", {"json": {
        "key": f"gw-m{next(_n)}", "site_id": w.site_a if site == "a" else w.site_b}})


# -- releases and campaigns (fleet/ota): a real signed release kit and the fleet's trust -------
_OTA: dict[str, Any] = {}


@pytest.fixture
def fleet_settings(db_url, tmp_path):  # type: ignore[no-untyped-def]
    """The conftest's settings plus a release trust and bundle URL, so OTA routes can act."""
    from fleet.ota.settings import OtaSettings
    from tests.fleet.conftest import settings_for
    from tests.fleet.ota_releases import ReleaseKit

    kit = ReleaseKit(tmp_path / "releases")
    settings = settings_for(db_url, tmp_path, ota=OtaSettings(
        release_trust=kit.trust, bundle_base_url="https://fleet.example"))
    _OTA.update(kit=kit, settings=settings)
    return settings


def _bundle() -> bytes:
    n = next(_n)
    return _OTA["kit"].bundle((2, n // 100, n % 100))  # type: ignore[no-any-return]


def release_upload(w: World, db: Any) -> tuple[str, dict[str, Any]]:
    return "/api/v1/releases", {"content": _bundle() if db is not None else b"",
                                "headers": {"Content-Type": "application/x-tar"}}


def new_release(db: Any) -> int:
    from fleet.ota import service as ota

    if db is None:
        return 1
    with db.transaction() as s:
        return ota.upload_release(s, _OTA["settings"], _ROOT, _bundle()).id


def new_campaign(ward: str, then: str = "") -> Callable[[World, Any], int]:
    """A fire campaign in ward A or B, on a fire detector made for it (devices already in a
    live campaign are not targeted again); ``then``: "pause" it first."""

    def make(w: World, db: Any) -> int:
        from fleet.ota import service as ota
        from fleet.registry import service as reg

        if db is None:
            return 1
        with db.transaction() as s:
            site = w.site_a if ward == "a" else w.site_b
            reg.create_device(s, _ROOT, gateway_id=w.gw_a if ward == "a" else w.gw_b,
                              key=f"ota-{next(_n)}", device_class="fire", site_id=site)
            rid = ota.upload_release(s, _OTA["settings"], _ROOT, _bundle()).id
            campaign = ota.create_campaign(s, _OTA["settings"], _ROOT, ota.CampaignSpec(
                name="m", release_id=rid, area_id=w.ward_a if ward == "a" else w.ward_b))
            if then == "pause":
                ota.pause(s, _ROOT, campaign.id)
            return campaign.id

    return make


def campaign_call(make: Callable[[World, Any], int], suffix: str = ""):  # type: ignore[no-untyped-def]
    return lambda w, db: (f"/api/v1/campaigns/{make(w, db)}{suffix}", {})


def campaign_body(ward: str) -> Callable[[World, Any], tuple[str, dict[str, Any]]]:
    def req(w: World, db: Any) -> tuple[str, dict[str, Any]]:
        from fleet.registry import service as reg

        if db is None:
            return "/api/v1/campaigns", {"json": {"name": "m", "release_id": 1}}
        with db.transaction() as s:
            reg.create_device(s, _ROOT, gateway_id=w.gw_a if ward == "a" else w.gw_b,
                              key=f"ota-{next(_n)}", device_class="fire",
                              site_id=w.site_a if ward == "a" else w.site_b)
        return "/api/v1/campaigns", {"json": {
            "name": "m", "release_id": new_release(db),
            "area_id": w.ward_a if ward == "a" else w.ward_b}}
    return req


OPS = row(200, 200, 403, 403, 403)
FIRE_READ = row(200, 200, 404, 200, 200, 200)


CASES = [
    Case("GET", "/api/v1/health", "-", ALL, fixed("/api/v1/health")),
    Case("GET", "/api/v1/auth/me", "-", ALL, fixed("/api/v1/auth/me")),
    Case("GET", "/api/v1/auth/users", "-", ADMIN_ONLY, fixed("/api/v1/auth/users")),
    # a user with no area is city-wide: only the city-wide admin makes one
    Case("POST", "/api/v1/auth/users", "-", ROOT_ONLY_201,
         lambda w, db: ("/api/v1/auth/users", {"json": {"username": f"u{next(_n)}",
                                                        "role": "viewer"}})),
    Case("POST", "/api/v1/auth/users", "in", ADMIN_ONLY_201,
         lambda w, db: ("/api/v1/auth/users", {"json": {"username": f"u{next(_n)}",
                                                        "role": "admin", "area_id": w.ward_a}})),
    Case("POST", "/api/v1/auth/users", "out", row(201, 403, 403, 403, 403, ward_admin=404),
         lambda w, db: ("/api/v1/auth/users", {"json": {"username": f"u{next(_n)}",
                                                        "role": "admin", "area_id": w.ward_b}})),
    Case("POST", "/api/v1/auth/tokens", "-", row(201, 201, 201, 201, 201),
         fixed("/api/v1/auth/tokens", json={"name": "m"})),
    # someone else's token (the admin's own for admin): revoking it is not yours to do
    Case("DELETE", "/api/v1/auth/tokens/{token_id}", "-", row(204, 404, 404, 404, 404,
                                                                  ward_admin=404),
         lambda w, db: (f"/api/v1/auth/tokens/{w.admin_token_id}", {})),
    # a wrong current password: 401 whoever asks (the route is reachable by every role)
    Case("POST", "/api/v1/auth/password", "-", row(401, 401, 401, 401, 401),
         fixed("/api/v1/auth/password", json={"old_password": "wrong",
                                              "new_password": "x" * 16})),
    Case("GET", "/api/v1/areas", "-", ALL, fixed("/api/v1/areas")),
    Case("POST", "/api/v1/areas", "out", row(201, 403, 403, 403, 403, ward_admin=404),
         lambda w, db: ("/api/v1/areas", {"json": {"name": f"a{next(_n)}",
                                                   "parent_id": w.city}})),
    Case("POST", "/api/v1/areas", "in", ADMIN_ONLY_201,
         lambda w, db: ("/api/v1/areas", {"json": {"name": f"a{next(_n)}",
                                                   "parent_id": w.ward_a}})),
    Case("GET", "/api/v1/areas/{area_id}", "in", ALL,
         lambda w, db: (f"/api/v1/areas/{w.ward_a}", {})),
    Case("GET", "/api/v1/areas/{area_id}", "out", HIDDEN,
         lambda w, db: (f"/api/v1/areas/{w.ward_b}", {})),
    Case("POST", "/api/v1/areas/{area_id}/move", "out", row(200, 403, 403, 403, 403,
                                                            ward_admin=404),
         lambda w, db: (f"/api/v1/areas/{w.ward_b}/move", {"json": {"parent_id": w.city}})),
    Case("PUT", "/api/v1/areas/{area_id}/outline", "in", ADMIN_ONLY,
         lambda w, db: (f"/api/v1/areas/{w.ward_a}/outline", {"json": {"outline": None}})),
    Case("PUT", "/api/v1/areas/{area_id}/outline", "out", row(200, 403, 403, 403, 403,
                                                              ward_admin=404),
         lambda w, db: (f"/api/v1/areas/{w.ward_b}/outline", {"json": {"outline": None}})),
    Case("GET", "/api/v1/sites", "-", ALL, fixed("/api/v1/sites")),
    Case("POST", "/api/v1/sites", "in", row(201, 201, 403, 403, 403), site_body("a")),
    Case("POST", "/api/v1/sites", "out", row(201, 404, 403, 403, 403, ward_admin=404),
         site_body("b")),
    Case("GET", "/api/v1/gateways", "-", ALL, fixed("/api/v1/gateways")),
    Case("POST", "/api/v1/gateways", "in", row(201, 201, 403, 403, 403), gateway_body("a")),
    Case("POST", "/api/v1/gateways", "out", row(201, 404, 403, 403, 403, ward_admin=404),
         gateway_body("b")),
    Case("GET", "/api/v1/devices", "-", ALL, fixed("/api/v1/devices")),
    Case("POST", "/api/v1/devices", "in", row(201, 201, 403, 403, 403), device_body("a")),
    Case("POST", "/api/v1/devices", "out", row(201, 404, 403, 403, 403, ward_admin=404),
         device_body("b")),
    Case("GET", "/api/v1/devices/export.csv", "-", ALL, fixed("/api/v1/devices/export.csv")),
    Case("POST", "/api/v1/devices/import", "in", row(200, 200, 403, 403, 403), csv_body("a")),
    Case("POST", "/api/v1/devices/import", "out", row(200, 422, 403, 403, 403, ward_admin=422),
         csv_body("b")),
    Case("GET", "/api/v1/devices/{device_id}", "in", ALL,
         lambda w, db: (f"/api/v1/devices/{w.devices['flood-a']}", {})),
    Case("GET", "/api/v1/devices/{device_id}", "out", HIDDEN,
         lambda w, db: (f"/api/v1/devices/{w.devices['water-b']}", {})),
    Case("GET", "/api/v1/devices/{device_id}", "fire", row(200, 200, 404, 200, 200, 200),
         lambda w, db: (f"/api/v1/devices/{w.devices['fire-a']}", {})),
    Case("PATCH", "/api/v1/devices/{device_id}", "in", row(200, 200, 403, 403, 403),
         lambda w, db: (f"/api/v1/devices/{w.devices['flood-a']}", {"json": {"name": "x"}})),
    Case("PATCH", "/api/v1/devices/{device_id}", "out", row(200, 404, 403, 403, 403,
                                                            ward_admin=404),
         lambda w, db: (f"/api/v1/devices/{w.devices['water-b']}", {"json": {"name": "x"}})),
    *[case for sub, params in (("telemetry", {"params": {"field": "level"}}), ("delivery", {}))
      for case in (
          Case("GET", f"/api/v1/devices/{{device_id}}/{sub}", "in", ALL,
               lambda w, db, sub=sub, p=params: (
                   f"/api/v1/devices/{w.devices['flood-a']}/{sub}", dict(p))),
          Case("GET", f"/api/v1/devices/{{device_id}}/{sub}", "out", HIDDEN,
               lambda w, db, sub=sub, p=params: (
                   f"/api/v1/devices/{w.devices['water-b']}/{sub}", dict(p))),
          Case("GET", f"/api/v1/devices/{{device_id}}/{sub}", "fire",
               row(200, 200, 404, 200, 200, 200),
               lambda w, db, sub=sub, p=params: (
                   f"/api/v1/devices/{w.devices['fire-a']}/{sub}", dict(p))))],
    # The dashboard's own views (fleet/web/api.py): as readable as the device.
    Case("GET", "/api/v1/dashboard/me", "-", ALL, fixed("/api/v1/dashboard/me")),
    Case("GET", "/api/v1/dashboard/map", "-", ALL, fixed("/api/v1/dashboard/map")),
    Case("GET", "/api/v1/dashboard/health", "-", ALL, fixed("/api/v1/dashboard/health")),
    Case("GET", "/api/v1/dashboard/devices/{device_id}", "in", ALL, lambda w, db: (
        f"/api/v1/dashboard/devices/{w.devices['flood-a']}", {})),
    Case("GET", "/api/v1/dashboard/devices/{device_id}", "out", HIDDEN, lambda w, db: (
        f"/api/v1/dashboard/devices/{w.devices['water-b']}", {})),
    Case("GET", "/api/v1/dashboard/devices/{device_id}", "fire", row(200, 200, 404, 200, 200, 200),
         lambda w, db: (f"/api/v1/dashboard/devices/{w.devices['fire-a']}", {})),
    Case("GET", "/metrics", "-", ROOT_ONLY, fixed("/metrics")),
    Case("GET", "/api/v1/alarms", "-", ALL, fixed("/api/v1/alarms")),
    Case("GET", "/api/v1/alarms/{alarm_id}", "in", ALL, alarm_call(ALARM_IN, "")),
    Case("GET", "/api/v1/alarms/{alarm_id}", "out", HIDDEN, alarm_call(ALARM_OUT, "")),
    Case("GET", "/api/v1/alarms/{alarm_id}", "fire", row(200, 200, 404, 200, 200, 200),
         alarm_call(ALARM_FIRE, "")),
    Case("GET", "/api/v1/alarms/{alarm_id}/history", "in", ALL,
         alarm_call(ALARM_IN, "/history")),
    Case("GET", "/api/v1/alarms/{alarm_id}/history", "out", HIDDEN,
         alarm_call(ALARM_OUT, "/history")),
    Case("POST", "/api/v1/alarms/{alarm_id}/acknowledge", "in", row(200, 200, 200, 200, 403),
         alarm_call(ALARM_IN, "/acknowledge", True)),
    Case("POST", "/api/v1/alarms/{alarm_id}/acknowledge", "out", row(200, 404, 404, 404, 403,
                                                                     ward_admin=404),
         alarm_call(ALARM_OUT, "/acknowledge", True)),
    Case("POST", "/api/v1/alarms/{alarm_id}/acknowledge", "fire",
         row(200, 200, 404, 200, 403, 200), alarm_call(ALARM_FIRE, "/acknowledge", True)),
    # resolving an unacknowledged alarm is a 409 for whoever may act on it at all
    Case("POST", "/api/v1/alarms/{alarm_id}/resolve", "in", row(409, 409, 409, 409, 403),
         alarm_call(ALARM_IN, "/resolve", True)),
    Case("POST", "/api/v1/alarms/{alarm_id}/resolve", "out", row(409, 404, 404, 404, 403,
                                                                 ward_admin=404),
         alarm_call(ALARM_OUT, "/resolve", True)),
    Case("GET", "/api/v1/audit", "-", ROOT_ONLY, fixed("/api/v1/audit")),
    Case("POST", "/api/v1/devices/{device_id}/commands", "in",
         row(201, 201, 403, 403, 403),
         lambda w, db: (f"/api/v1/devices/{w.devices['flood-a']}/commands",
                        {"json": {"action": "write", "body": {"register": "stage2", "value": 1}}})),
    Case("POST", "/api/v1/devices/{device_id}/commands", "out",
         row(201, 404, 404, 404, 404, ward_admin=404),
         lambda w, db: (f"/api/v1/devices/{w.devices['water-b']}/commands",
                        {"json": {"action": "write",
                                  "body": {"register": "pressure_high", "value": 1}}})),
    Case("POST", "/api/v1/devices/{device_id}/commands", "fire",
         row(201, 201, 404, 201, 403, 403),
         lambda w, db: (f"/api/v1/devices/{w.devices['fire-a']}/commands",
                        {"json": {"action": "reset"}})),
    Case("GET", "/api/v1/devices/{device_id}/commands", "in", ALL,
         lambda w, db: (f"/api/v1/devices/{w.devices['flood-a']}/commands", {})),
    Case("GET", "/api/v1/devices/{device_id}/commands", "out", HIDDEN,
         lambda w, db: (f"/api/v1/devices/{w.devices['water-b']}/commands", {})),
    Case("GET", "/api/v1/notify/inbox", "-", ALL, fixed("/api/v1/notify/inbox")),
    Case("POST", "/api/v1/notify/inbox/{notification_id}/read", "-",
         row(404, 404, 404, 204, 404, ward_admin=404), fire_safety_notification),
    Case("GET", "/api/v1/webhooks", "-", ROOT_ONLY, fixed("/api/v1/webhooks")),
    Case("POST", "/api/v1/webhooks", "-", ROOT_ONLY_201,
         fixed("/api/v1/webhooks", json={"name": "scada", "url": "http://127.0.0.1:9/x"})),
    Case("DELETE", "/api/v1/webhooks/{webhook_id}", "-", row(204, 403, 403, 403, 403,
                                                             ward_admin=403),
         lambda w, db: (f"/api/v1/webhooks/{new_webhook(db)}", {})),
    Case("GET", "/api/v1/webhooks/{webhook_id}/deliveries", "-", ROOT_ONLY,
         lambda w, db: (f"/api/v1/webhooks/{new_webhook(db)}/deliveries", {})),
    # Releases and campaigns: admin and technician act (technician inside their area);
    # everyone reads what their area and the fire grant let them see.
    Case("POST", "/api/v1/releases", "-", row(201, 201, 403, 403, 403), release_upload),
    Case("GET", "/api/v1/releases", "-", ALL, fixed("/api/v1/releases")),
    Case("GET", "/api/v1/releases/{release_id}", "fire", FIRE_READ,
         lambda w, db: (f"/api/v1/releases/{new_release(db)}", {})),
    Case("GET", "/api/v1/releases/{release_id}/bundle", "fire", OPS,
         lambda w, db: (f"/api/v1/releases/{new_release(db)}/bundle", {})),
    Case("POST", "/api/v1/campaigns", "in", row(201, 201, 403, 403, 403), campaign_body("a")),
    Case("POST", "/api/v1/campaigns", "out", row(201, 404, 403, 403, 403, ward_admin=404),
         campaign_body("b")),
    Case("GET", "/api/v1/campaigns", "-", ALL, fixed("/api/v1/campaigns")),
    Case("GET", "/api/v1/campaigns/{campaign_id}", "in", FIRE_READ,
         campaign_call(new_campaign("a"))),
    Case("GET", "/api/v1/campaigns/{campaign_id}", "out", HIDDEN,
         campaign_call(new_campaign("b"))),
    Case("GET", "/api/v1/campaigns/{campaign_id}/devices", "in", FIRE_READ,
         campaign_call(new_campaign("a"), "/devices")),
    Case("GET", "/api/v1/campaigns/{campaign_id}/devices", "out", HIDDEN,
         campaign_call(new_campaign("b"), "/devices")),
    *[case for op, before in (("pause", ""), ("resume", "pause"), ("cancel", ""))
      for case in (
          Case("POST", f"/api/v1/campaigns/{{campaign_id}}/{op}", "in", OPS,
               campaign_call(new_campaign("a", before), f"/{op}")),
          Case("POST", f"/api/v1/campaigns/{{campaign_id}}/{op}", "out",
               row(200, 404, 403, 403, 403, ward_admin=404),
               campaign_call(new_campaign("b", before), f"/{op}")))],
]
#: Routes covered elsewhere: login is public (test_auth), the SSE stream never ends
#: (test_notify checks its RBAC filtering with a real server).
ELSEWHERE = {("POST", "/api/v1/auth/login"), ("GET", "/api/v1/notify/alarms")}
PUBLIC = {("GET", "/api/v1/health"), ("POST", "/api/v1/auth/login")}


def test_every_route_is_in_the_matrix(fleet_app) -> None:  # type: ignore[no-untyped-def]
    routes = {(method.upper(), path) for path, ops in fleet_app.openapi()["paths"].items()
              for method in ops}
    covered = {(c.method, c.route) for c in CASES} | ELSEWHERE
    assert routes - covered == set(), "add the new route to the RBAC matrix"
    assert covered - routes == set()


def test_rbac_matrix_every_role_every_endpoint_in_and_out_of_area(  # type: ignore[no-untyped-def]
        client, world, fleet_db) -> None:
    mismatches = []
    for case in CASES:
        for role in ROLES:
            path, kw = case.request(world, fleet_db)
            headers = {**kw.pop("headers", {}), **world.headers(role)}
            r = client.request(case.method, path, headers=headers, **kw)
            if r.status_code != case.expected[role]:
                mismatches.append(f"{case.method} {case.route} [{case.target}] as {role}: "
                                  f"{r.status_code} (expected {case.expected[role]})")
            if r.status_code >= 400:
                assert r.headers["content-type"] == "application/problem+json", path
    assert mismatches == []


def test_no_token_no_access(client, world) -> None:  # type: ignore[no-untyped-def]
    for case in CASES:
        if (case.method, case.route) in PUBLIC:
            continue
        path, kw = case.request(world, None) if "alarms/" not in case.route else (
            case.route.replace("{alarm_id}", "1"), {})
        kw.pop("headers", None)
        r = client.request(case.method, path.replace("{", "").replace("}", ""), **kw)
        assert r.status_code == 401, f"{case.method} {path}: {r.status_code}"
        assert r.headers["content-type"] == "application/problem+json"
