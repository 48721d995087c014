"""Registry on SQLite and PostgreSQL: the area tree, what each user sees, connectivity from the
gateway's own reports, auto-registration of devices first heard on MQTT, CSV import/export, and
area outlines (GeoJSON boundaries: checked, audited, migrated onto an existing registry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from contracts.mqtt import GatewayStatusPayload, StatePayload
from fleet.auth.rbac import Principal
from fleet.registry import service as reg
from fleet.registry.models import Device
from fleet.registry.outline import OutlineError, check_outline
from tests.fleet.conftest import empty_database_url

T0 = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
ADMIN = Principal(user_id=0, username="t", role="admin", area_path=None)


def state(device: str, online: bool, seq: int, ts: datetime = T0, epoch: str = "e1",
          cls: str = "fire", firmware: str = "1.2.0") -> StatePayload:
    return StatePayload.model_validate({"device": device, "class": cls, "ts": ts.isoformat(),
                                        "epoch": epoch, "seq": seq, "online": online,
                                        "firmware": firmware})


def status(gateway: str, online: bool, ts: datetime = T0) -> GatewayStatusPayload:
    return GatewayStatusPayload(gateway=gateway, online=online, ts=ts)


def connectivity(db, key: str) -> str:  # type: ignore[no-untyped-def]
    with db.transaction() as s:
        return s.scalar(select(Device.connectivity).where(Device.key == key))  # type: ignore[no-any-return]


def keys(client, who: str, world, **params) -> set[str]:  # type: ignore[no-untyped-def]
    r = client.get("/api/v1/devices", headers=world.headers(who), params=params)
    assert r.status_code == 200, r.text
    return {d["key"] for d in r.json()["items"]}


def test_an_area_tree_of_any_depth_and_a_ward_user_sees_only_their_ward(  # type: ignore[no-untyped-def]
        client, world, fleet_db) -> None:
    # City -> ward (HCMC since 2025), and elsewhere city -> district -> ward -> block: no fixed
    # depth anywhere.
    with fleet_db.transaction() as s:
        district = reg.create_area(s, name="Huyện Cần Giờ", kind="district",
                                   parent_id=world.city)
        commune = reg.create_area(s, name="Xã Thạnh An", kind="commune", parent_id=district.id)
        hamlet = reg.create_area(s, name="Ấp Thiềng Liềng", kind="hamlet",
                                 parent_id=commune.id)
        site = reg.create_site(s, ADMIN, name="Trạm y tế", area_id=hamlet.id)
        gw = reg.create_gateway(s, ADMIN, key="gw-deep", site_id=site.id)
        reg.create_device(s, ADMIN, gateway_id=gw.id, key="air-deep", device_class="air",
                          site_id=site.id)
    assert hamlet.path == f"/{world.city}/{district.id}/{commune.id}/{hamlet.id}/"
    assert keys(client, "admin", world, area_id=district.id) == {"air-deep"}
    assert keys(client, "technician", world) == {"fire-a", "flood-a"}
    assert keys(client, "viewer", world) == {"fire-a", "flood-a"}
    r = client.get(f"/api/v1/devices/{world.devices['fire-b']}",
                   headers=world.headers("technician"))
    assert r.status_code == 404  # another ward's device does not exist for this user
    areas = {a["name"] for a in client.get("/api/v1/areas",
                                           headers=world.headers("viewer")).json()}
    assert areas == {"Phường Bến Thành"}


def test_moving_a_ward_moves_everything_under_it(client, world, fleet_db) -> None:  # type: ignore[no-untyped-def]
    with fleet_db.transaction() as s:
        merged = reg.create_area(s, name="Phường mới", kind="ward", parent_id=world.city)
        reg.move_area(s, world.ward_b, merged.id)
    # the technician of ward A still sees only ward A; ward B's devices are now under "merged"
    with fleet_db.transaction() as s:
        _, devs = reg.list_devices(s, ADMIN, reg.DeviceFilter(area_id=merged.id))
    assert {d.key for d in devs} == {"fire-b", "water-b"}
    assert keys(client, "technician", world) == {"fire-a", "flood-a"}


def test_a_utility_user_sees_no_fire_detector_unless_granted(client, world) -> None:  # type: ignore[no-untyped-def]
    assert keys(client, "utility", world) == {"flood-a"}
    assert keys(client, "utility-fire", world) == {"fire-a", "flood-a"}
    assert keys(client, "fire-safety", world) == {"fire-a", "flood-a"}
    r = client.get(f"/api/v1/devices/{world.devices['fire-a']}",
                   headers=world.headers("utility"))
    assert r.status_code == 404


def test_a_device_first_heard_on_mqtt_is_registered_unassigned_for_admins_only(  # type: ignore[no-untyped-def]
        client, world, fleet_db) -> None:
    with fleet_db.transaction() as s:
        reg.apply_state(s, "gw-a", state("stranger-7", True, 1, cls="flood"))
        reg.apply_state(s, "gw-new", state("stranger-8", True, 1, cls="air"))
    assert {"stranger-7", "stranger-8"} <= keys(client, "admin", world, unassigned=True)
    for who in ("technician", "utility", "fire-safety", "viewer"):
        assert not keys(client, who, world) & {"stranger-7", "stranger-8"}
    gws = {g["key"]: g for g in client.get("/api/v1/gateways",
                                           headers=world.headers("admin")).json()}
    assert gws["gw-new"]["auto_created"] is True and gws["gw-new"]["site_id"] is None


def test_a_gateway_that_goes_offline_makes_its_devices_unknown_not_ok(world, fleet_db) -> None:  # type: ignore[no-untyped-def]
    with fleet_db.transaction() as s:
        reg.apply_gateway_status(s, "gw-a", status("gw-a", True))
        reg.apply_state(s, "gw-a", state("fire-a", True, 1))
        reg.apply_state(s, "gw-a", state("flood-a", False, 1, cls="flood"))
    assert connectivity(fleet_db, "fire-a") == "online"
    assert connectivity(fleet_db, "flood-a") == "offline"
    # the Last Will: the broker publishes {"online": false} for the gateway
    with fleet_db.transaction() as s:
        reg.apply_gateway_status(s, "gw-a", status("gw-a", False, T0 + timedelta(minutes=1)))
    assert connectivity(fleet_db, "fire-a") == "unknown"
    assert connectivity(fleet_db, "flood-a") == "unknown"
    assert connectivity(fleet_db, "fire-b") == "unknown"  # never reported: still unknown
    # a retained device state delivered while the gateway is offline does not make it "ok"
    with fleet_db.transaction() as s:
        reg.apply_state(s, "gw-a", state("fire-a", True, 2, T0 + timedelta(minutes=2)))
    assert connectivity(fleet_db, "fire-a") == "unknown"
    with fleet_db.transaction() as s:
        reg.apply_gateway_status(s, "gw-a", status("gw-a", True, T0 + timedelta(minutes=3)))
    assert connectivity(fleet_db, "fire-a") == "online"
    assert connectivity(fleet_db, "flood-a") == "offline"


def test_the_gateways_real_last_will_makes_its_devices_unknown(world, fleet_db) -> None:  # type: ignore[no-untyped-def]
    """The Last Will the gateway registers (gateway/mqtt.py ``status_payload(online=False)``)
    carries no timestamp: it was written at connect time, before the "online" that follows."""
    from gateway.mqtt import MqttSession

    session = MqttSession.__new__(MqttSession)  # only the payload, no connection
    session.gateway_id, session.health = "gw-a", None
    lwt = GatewayStatusPayload.model_validate_json(session.status_payload(online=False))
    assert lwt.ts is None
    with fleet_db.transaction() as s:
        reg.apply_gateway_status(s, "gw-a", status("gw-a", True, T0 + timedelta(minutes=1)))
        reg.apply_state(s, "gw-a", state("fire-a", True, 1, T0 + timedelta(minutes=1)))
    assert connectivity(fleet_db, "fire-a") == "online"
    with fleet_db.transaction() as s:
        reg.apply_gateway_status(s, "gw-a", lwt)
    assert connectivity(fleet_db, "fire-a") == "unknown"


def test_a_replayed_older_status_or_state_changes_nothing(world, fleet_db) -> None:  # type: ignore[no-untyped-def]
    with fleet_db.transaction() as s:
        reg.apply_gateway_status(s, "gw-a", status("gw-a", True, T0 + timedelta(minutes=5)))
        reg.apply_state(s, "gw-a", state("fire-a", False, 9, T0 + timedelta(minutes=5)))
        reg.apply_state(s, "gw-a", state("fire-a", True, 8, T0 + timedelta(minutes=6)))
        reg.apply_gateway_status(s, "gw-a", status("gw-a", False, T0))
    assert connectivity(fleet_db, "fire-a") == "offline"
    # a new epoch (a replaced SD card) starts seq again; its newer timestamp wins
    with fleet_db.transaction() as s:
        reg.apply_state(s, "gw-a", state("fire-a", True, 1, T0 + timedelta(minutes=7),
                                         epoch="e2", firmware="1.3.0"))
        dev = s.get(Device, world.devices["fire-a"])
        assert dev is not None and dev.firmware == "1.3.0"
    assert connectivity(fleet_db, "fire-a") == "online"


def test_last_seen_never_goes_backwards(world, fleet_db) -> None:  # type: ignore[no-untyped-def]
    with fleet_db.transaction() as s:
        reg.touch_device(s, "gw-a", "fire-a", T0 + timedelta(seconds=10))
        reg.touch_device(s, "gw-a", "fire-a", T0)
        assert reg.touch_device(s, "gw-a", "nobody", T0) is None
        ctx = reg.device_context(s, "gw-a", "fire-a")
    with fleet_db.transaction() as s:
        dev = s.get(Device, world.devices["fire-a"])
        assert dev is not None and dev.last_seen == T0 + timedelta(seconds=10)
    assert ctx is not None and ctx.area_id == world.ward_a and ctx.site_id == world.site_a


def test_csv_import_reports_every_bad_row_by_line_and_imports_nothing(  # type: ignore[no-untyped-def]
        client, world) -> None:
    csv_text = ("gateway,device,class,name,address,site_id,tags\n"
                f"gw-a,smoke-1,fire,Kho 1,10,{world.site_a},kho;tầng 1\n"
                f"gw-a,smoke-2,plasma,Kho 2,11,{world.site_a},\n"
                f"gw-a,smoke-3,fire,Kho 3,300,{world.site_a},\n"
                f"gw-a,smoke-1,fire,again,12,{world.site_a},\n"
                f"gw-a,smoke-4,fire,Kho 4,13,{world.site_b},\n")
    r = client.post("/api/v1/devices/import", content=csv_text.encode(),
                    headers={**world.headers("technician"), "Content-Type": "text/csv"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    errors = {(e["row"], e["column"]) for e in r.json()["errors"]}
    # row 3: bad class; row 4: address out of 1-247; row 5: duplicate of row 2; row 6: a site
    # in another ward is invisible to this technician
    assert errors == {(3, "class"), (4, "address"), (5, "device"), (6, "site_id")}
    assert "smoke-1" not in keys(client, "admin", world)


def test_csv_export_then_import_round_trips(client, world) -> None:  # type: ignore[no-untyped-def]
    csv_text = ("gateway,device,class,name,address,site_id,tags\n"
                f"gw-a,smoke-1,fire,Kho 1,10,{world.site_a},kho;tầng 1\n"
                f"gw-c,level-1,flood,Cống,,{world.site_a},kho-2\n")
    r = client.post("/api/v1/devices/import", content=csv_text.encode(),
                    headers={**world.headers("technician"), "Content-Type": "text/csv"})
    assert r.status_code == 200 and r.json() == {"created": 2, "updated": 0}
    exported = client.get("/api/v1/devices/export.csv", headers=world.headers("technician"))
    assert exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.splitlines()
    assert f"gw-a,smoke-1,fire,Kho 1,10,{world.site_a},kho;tầng 1" in lines
    assert len(lines) == 1 + 4  # header, fire-a, flood-a, smoke-1, level-1
    r = client.post("/api/v1/devices/import", content=exported.text.encode(),
                    headers={**world.headers("technician"), "Content-Type": "text/csv"})
    assert r.json() == {"created": 0, "updated": 4}
    assert keys(client, "technician", world, tag="kho") == {"smoke-1"}
    assert keys(client, "technician", world, tag="tầng 1") == {"smoke-1"}
    assert keys(client, "technician", world, tag="kho-2") == {"level-1"}


def test_a_device_list_filters_and_pages(client, world) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/api/v1/devices", headers=world.headers("admin"),
                   params={"limit": 2, "offset": 1})
    page = r.json()
    assert page["total"] == 4 and [d["key"] for d in page["items"]] == ["flood-a", "fire-b"]
    assert keys(client, "admin", world, **{"class": "fire"}) == {"fire-a", "fire-b"}
    assert keys(client, "admin", world, gateway="gw-b") == {"fire-b", "water-b"}


def test_a_broken_csv_file_is_a_problem_report_not_a_server_error(client, world) -> None:  # type: ignore[no-untyped-def]
    headers = {**world.headers("admin"), "Content-Type": "text/csv"}
    for body in ("gateway,device,class\ngw-a,x\ry,fire\n",       # a bare CR inside a field
                 "gateway,device,class\ngw-a," + "x" * 200_000 + ",fire\n"):  # over csv's limit
        r = client.post("/api/v1/devices/import", content=body.encode(), headers=headers)
        assert r.status_code == 422, r.text[:300]
        assert r.headers["content-type"] == "application/problem+json"


# -- area outlines -----------------------------------------------------------------------------
def square(lon: float, lat: float, size: float = 0.01) -> list[list[float]]:
    return [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size],
            [lon, lat]]


def test_a_boundary_exported_with_altitudes_is_taken_flat() -> None:
    """GIS exports often write [lon, lat, 0] (RFC 7946 allows an altitude): the map is flat."""
    ring = [[lon, lat, 0.0] for lon, lat in square(106.69, 10.77)]
    assert check_outline({"type": "Polygon", "coordinates": [ring]}) == \
        {"type": "Polygon", "coordinates": [square(106.69, 10.77)]}
    ring[2] = [*ring[2][:2], "high"]
    with pytest.raises(OutlineError, match="position 2: altitude is 'high', not a number"):
        check_outline({"type": "Polygon", "coordinates": [ring]})


WARD_A_OUTLINE = {"type": "Polygon", "coordinates": [square(106.69, 10.77)]}


def test_an_admin_draws_a_wards_boundary_and_the_audit_log_says_who(  # type: ignore[no-untyped-def]
        client, world) -> None:
    url = f"/api/v1/areas/{world.ward_a}/outline"
    r = client.put(url, json={"outline": WARD_A_OUTLINE}, headers=world.headers("ward-admin"))
    assert r.status_code == 200, r.text
    assert r.json()["outline"] == WARD_A_OUTLINE
    areas = {a["id"]: a for a in client.get("/api/v1/areas",
                                           headers=world.headers("viewer")).json()}
    assert areas[world.ward_a]["outline"] == WARD_A_OUTLINE
    # A ward's admin draws their own ward, not the next one; other roles draw nothing.
    assert client.put(f"/api/v1/areas/{world.ward_b}/outline", json={"outline": WARD_A_OUTLINE},
                      headers=world.headers("ward-admin")).status_code == 404
    assert client.put(url, json={"outline": None},
                      headers=world.headers("technician")).status_code == 403
    # Removed: the area has no outline again (SQL NULL, so the map falls back to the hull).
    r = client.put(url, json={"outline": None}, headers=world.headers("admin"))
    assert r.status_code == 200 and r.json()["outline"] is None
    entries = client.get("/api/v1/audit", headers=world.headers("admin"),
                         params={"entity_type": "area", "entity_id": str(world.ward_a)}).json()
    drawn = [(e["action"], e["actor"]) for e in entries if e["action"].startswith("area.outline")]
    assert sorted(drawn) == [("area.outline_removed", "user:admin"),
                             ("area.outline_set", "user:ward-admin")]
    first = next(e for e in entries if e["action"] == "area.outline_set")
    assert first["detail"]["after"] == {"type": "Polygon", "polygons": 1, "positions": 5,
                                        "bbox": [106.69, 10.77, 106.7, 10.78]}


#: Geometry an admin might paste, and the words the refusal must contain.
BAD_OUTLINES = [
    ({"type": "Point", "coordinates": [106.69, 10.77]}, "Polygon or a MultiPolygon"),
    ({"type": "Feature", "geometry": WARD_A_OUTLINE}, "send the feature's geometry"),
    ({"type": "Polygon", "coordinates": [square(106.69, 10.77)[:-1]]}, "ring 0 is not closed"),
    ({"type": "Polygon", "coordinates": [[[106.69, 10.77], [106.70, 10.77], [106.69, 10.77]]]},
     "at least 4 positions"),
    ({"type": "Polygon", "coordinates": [[[lat, lon] for lon, lat in square(106.69, 10.77)]]},
     "latitude 106.69 is outside -90..90"),
    ({"type": "Polygon", "coordinates": [square(200.0, 10.77)]}, "longitude 200 is outside"),
    ({"type": "Polygon", "coordinates": [[[106.69, "10.77"], *square(106.69, 10.77)[1:]]]},
     "position 0: latitude is '10.77', not a number"),
    ({"type": "MultiPolygon", "coordinates": [[square(106.69, 10.77)],
                                              [square(106.71, 10.77)[:-1]]]},
     "polygon 1, ring 0 is not closed"),
    ({"type": "Polygon", "coordinates": [[[106.69 + i * 1e-5, 10.77] for i in range(5000)]
                                         + [[106.69, 10.77]]]}, "more than 5000 positions"),
]


def test_a_boundary_that_is_not_an_area_is_refused_saying_what_is_wrong(  # type: ignore[no-untyped-def]
        client, world) -> None:
    url = f"/api/v1/areas/{world.ward_a}/outline"
    for geometry, words in BAD_OUTLINES:
        r = client.put(url, json={"outline": geometry}, headers=world.headers("admin"))
        assert r.status_code == 422, (words, r.text[:300])
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"].startswith("body.outline"), r.json()["detail"]
        assert words in r.json()["detail"], (words, r.json()["detail"])
    # Nor through the create call.
    r = client.post("/api/v1/areas", headers=world.headers("admin"), json={
        "name": "Phường mới", "parent_id": world.city, "outline": BAD_OUTLINES[2][0]})
    assert r.status_code == 422 and "not closed" in r.json()["detail"]
    assert client.get(f"/api/v1/areas/{world.ward_a}",
                      headers=world.headers("admin")).json()["outline"] is None


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_an_existing_registry_gains_outlines_and_keeps_its_areas_both_ways(  # type: ignore[no-untyped-def]
        kind, tmp_path, request) -> None:
    from fleet.core.db import Database
    from fleet.core.migrate import downgrade, pending_changes, upgrade
    from fleet.registry.models import Area

    url = empty_database_url(kind, tmp_path, request)
    upgrade(url, "0007_fleetfix")  # the registry as it was before outlines
    db = Database.from_url(url)
    try:
        with db.transaction() as s:
            s.execute(text("INSERT INTO areas (name, kind, path) VALUES ('Phường Bến Thành', "
                           "'ward', '/1/')"))
        upgrade(url)
        assert pending_changes(url) == []
        with db.transaction() as s:
            # An area from before has no outline: SQL NULL, so the map draws its hull.
            assert s.scalar(text("SELECT count(*) FROM areas WHERE outline IS NULL")) == 1
            area = s.scalars(select(Area)).one()
            area.outline = WARD_A_OUTLINE
        with db.transaction() as s:
            assert s.scalars(select(Area)).one().outline == WARD_A_OUTLINE
        downgrade(url, "registry_0001@-1")  # this revision only; OTA and ingest stay
        with db.transaction() as s:
            assert s.execute(text("SELECT name, path FROM areas")).all() == [
                ("Phường Bến Thành", "/1/")]
            heads = set(s.scalars(text("SELECT version_num FROM alembic_version")))
        assert "registry_0001" not in heads and "ota_0002" in heads
    finally:
        db.dispose()
