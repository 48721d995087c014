"""Releases and campaigns, on SQLite and PostgreSQL: the fleet refuses every bundle a device
would refuse, serves a stored one only to a live campaign's token, rolls a campaign out in
waves that halt on their own, freezes at a site with a fire, and hears progress through the
real ingest path (decode -> OtaEvent -> campaign)."""

from __future__ import annotations

import itertools
import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from contracts.mqtt import ack_topic, device_topic
from fleet.control import service as control
from fleet.control.models import DeviceCommand
from fleet.core.db import Database, utcnow
from fleet.ingest.service import Inbound, Ingestor
from fleet.ota import service as ota
from fleet.ota import waves as W
from fleet.ota.models import CampaignDevice
from fleet.ota.timer import tick
from fleet.registry import service as reg
from fleet.telemetry import EmbeddedStore
from tests.fleet.conftest import World, settings_for
from tests.fleet.ota_releases import ReleaseKit, pack

T0 = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
BASE = "https://fleet.example"


# -- the pure core: waves, halts, steps -------------------------------------------------------
@pytest.mark.parametrize("n, waves, sizes", [
    (100, (1, 10, 50, 100), [1, 9, 40, 50]),
    (10, (1, 10, 50, 100), [1, 1, 3, 5]),
    (4, (1, 10, 50, 100), [1, 1, 1, 1]),
    (2, (1, 10, 50, 100), [1, 1]),         # fewer waves, none empty
    (1, (1, 10, 50, 100), [1]),
    (1000, (1, 10, 50, 100), [10, 90, 400, 500]),
    (7, (100,), [7]),
    (3, (50, 100), [2, 1]),
])
def test_every_wave_takes_at_least_one_device_and_all_are_covered(
        n: int, waves: tuple[float, ...], sizes: list[int]) -> None:
    assert W.plan_waves(n, waves) == sizes
    assert sum(sizes) == n


S = W.WaveStats


@pytest.mark.parametrize("stats, halt", [
    (S(total=1, confirmed=0, failed=1, cancelled=0), True),    # the one canary failed
    (S(total=1, confirmed=1, failed=0, cancelled=0), False),
    (S(total=10, confirmed=0, failed=2, cancelled=0), False),  # 2/10 could still end at 20 %
    (S(total=10, confirmed=0, failed=3, cancelled=0), True),   # 3 of 10 > 20 % whatever comes
    (S(total=10, confirmed=8, failed=2, cancelled=0), False),  # ended at exactly 20 %
    (S(total=10, confirmed=2, failed=1, cancelled=7), False),  # 1 of 3 will finish... 33 %?
    (S(total=10, confirmed=7, failed=0, cancelled=3), False),
    (S(total=5, confirmed=0, failed=0, cancelled=5), False),   # all cancelled: no verdict
])
def test_a_wave_halts_once_its_failure_rate_cannot_come_back_under_the_threshold(
        stats: W.WaveStats, halt: bool) -> None:
    expected = halt or (stats.ended and stats.failure_rate > 0.2)
    assert W.should_halt(stats, 0.2) == expected


def test_the_ended_wave_above_threshold_halts() -> None:
    assert W.should_halt(S(total=10, confirmed=2, failed=1, cancelled=7), 0.2)


def m(id_: int, wave: int, state: str, hazard: bool = False,
      at: datetime | None = None) -> W.Member:
    return W.Member(id_, wave, state, hazard, at or T0)


def test_step_offers_the_current_wave_except_at_a_site_with_a_hazard() -> None:
    members = [m(1, 0, "confirmed"), m(2, 1, "pending"), m(3, 1, "pending", hazard=True),
               m(4, 2, "pending")]
    s = W.step("running", 0, 3, members, 0.2, 3600, T0)
    assert (s.state, s.wave, s.offer, s.held) == ("running", 1, (2,), (3,))


def test_step_waits_for_the_held_device_before_the_next_wave() -> None:
    members = [m(1, 0, "confirmed"), m(2, 0, "pending", hazard=True), m(3, 1, "pending")]
    s = W.step("running", 0, 2, members, 0.2, 3600, T0)
    assert (s.wave, s.offer, s.held) == (0, (), (2,))


def test_step_halts_on_a_failed_canary_and_completes_after_the_last_wave() -> None:
    s = W.step("running", 0, 2, [m(1, 0, "failed"), m(2, 1, "pending")], 0.2, 3600, T0)
    assert (s.state, s.offer) == ("halted", ()) and "1 of 1" in s.halt_reason
    # the sentence stored for logs reads back as the halt the page words in its language
    assert W.Halt.parse(s.halt_reason) == W.Halt("failure_rate", 1, 1, 1)
    assert W.Halt.parse("") is None and W.Halt.parse("stopped by hand") is None
    s = W.step("running", 1, 2, [m(1, 0, "confirmed"), m(2, 1, "confirmed")], 0.2, 3600, T0)
    assert s.state == "completed"


def test_a_silent_device_times_out_even_when_the_campaign_is_paused() -> None:
    late = T0 + timedelta(seconds=3600)
    members = [m(1, 0, "transferring"), m(2, 0, "pending")]
    assert W.step("paused", 0, 1, members, 0.2, 3600, late) == W.Step(
        timed_out=(1,), state="paused", wave=0)
    # running: the time-out counts as a failure of the wave: 1 of 2 -> halt
    assert W.step("running", 0, 1, members, 0.2, 3600, late).state == "halted"


E0 = datetime(2026, 12, 2, 5, 10, tzinfo=UTC)


@pytest.mark.parametrize("state, last, event, phase, applies", [
    ("sent", None, ("new", 1, E0), "accepted", True),                        # the first event
    ("transferring", ("new", 5, E0), ("new", 6, E0), "committed", True),     # the next seq
    ("transferring", ("new", 5, E0), ("new", 5, E0), "committed", False),    # a duplicate
    ("committed", ("new", 7, E0), ("new", 4, E0), "transferring", False),    # an older seq
    # another epoch: ordered by its timestamp (a replayed old outbox is older)
    ("committed", ("new", 7, E0), ("old", 90, E0 - timedelta(minutes=5)), "transferring", False),
    ("committed", ("new", 7, E0), ("old", 90, E0 - timedelta(minutes=5)), "failed", False),
    ("transferring", ("old", 9, E0), ("new", 1, E0 + timedelta(seconds=1)), "committed", True),
    # a commit cannot be taken back, whatever the numbering says
    ("trial", ("new", 7, E0), ("new", 8, E0), "transferring", False),
    ("committed", ("new", 7, E0), ("new", 8, E0), "trial", True),
    # an ended device never changes
    ("confirmed", ("new", 9, E0), ("new", 10, E0), "transferring", False),
    ("failed", ("new", 9, E0), ("new", 10, E0), "confirmed", False),
])
def test_a_devices_campaign_progress_only_moves_forward(
        state: str, last: tuple[str, int, datetime] | None, event: tuple[str, int, datetime],
        phase: str, applies: bool) -> None:
    assert W.event_applies(state, last, event, phase) is applies


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def kit(tmp_path: Path) -> ReleaseKit:
    return ReleaseKit(tmp_path / "releases")


@pytest.fixture
def fleet_settings(db_url: str, tmp_path: Path, kit: ReleaseKit):  # type: ignore[no-untyped-def]
    from fleet.ota.settings import OtaSettings

    return settings_for(db_url, tmp_path, ota=OtaSettings(
        release_trust=kit.trust, bundle_base_url=BASE + "/", device_timeout_s=600))


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = EmbeddedStore(tmp_path / "telemetry.db")
    yield s
    s.close()


def upload(client: Any, world: World, data: bytes, who: str = "technician") -> Any:
    return client.post("/api/v1/releases", content=data, headers={
        **world.headers(who), "Content-Type": "application/x-tar"})


_keys = itertools.count(1)


def add_fire(db: Database, world: World, n: int, site: str = "a",
             firmware: str | None = "1.3.0", tags: list[str] | None = None) -> list[str]:
    """``n`` more fire detectors at site A or B (plus the world's own, set to ``firmware``)."""
    from fleet.auth.rbac import Principal
    from fleet.registry.models import Device

    root = Principal(user_id=0, username="setup", role="admin", area_path=None)
    keys = []
    with db.transaction() as s:
        for _ in range(n):
            key = f"fire-{site}{next(_keys)}"
            dev = reg.create_device(s, root, gateway_id=world.gw_a if site == "a" else world.gw_b,
                                    key=key, device_class="fire", tags=tags or [],
                                    site_id=world.site_a if site == "a" else world.site_b)
            dev.firmware = firmware
            keys.append(key)
        for dev in s.scalars(select(Device).where(Device.key.in_(("fire-a", "fire-b")))):
            dev.firmware = firmware
    return keys


class Gateways:
    """What gateways publish, through the real ingest path (decode, de-duplication, handlers)."""

    def __init__(self, db: Database, store: EmbeddedStore) -> None:
        self.ingest = Ingestor(db, store)
        self.seq: dict[str, int] = {}

    def event(self, gw: str, dev: str, campaign: int, phase: str, release: str = "1.4.0",
              **extra: Any) -> None:
        self.seq[dev] = self.seq.get(dev, 0) + 1
        body = {"v": 1, "device": dev, "ts": "2026-12-02T05:00:00Z", "epoch": "ep",
                "seq": self.seq[dev], "event": "ota", "campaign": str(campaign),
                "release": release, "phase": phase, **extra}
        result = self.ingest.process([Inbound(device_topic(gw, dev, "event"),
                                              json.dumps(body).encode())])
        assert not result.rejects, result.rejects

    def alarm(self, gw: str, dev: str, state: str, cls: str = "fire",
              type_: str | None = None) -> None:
        self.seq[dev] = self.seq.get(dev, 0) + 1
        type_ = type_ or ("smoke" if cls == "fire" else "stage2")
        body = {"v": 1, "device": dev, "class": cls, "ts": "2026-12-02T05:00:00Z",
                "epoch": "ep", "seq": self.seq[dev], "alarm_id": f"{dev}:{type_}:1:1",
                "type": type_, "state": state, "severity": "critical"}
        self.ingest.process([Inbound(device_topic(gw, dev, "alarm"),
                                     json.dumps(body).encode())])

    def ack(self, gw: str, command_id: str, ok: bool, error: str | None = None) -> None:
        body = {"v": 1, "id": command_id, "ok": ok, "error": error}
        self.ingest.process([Inbound(ack_topic(gw), json.dumps(body).encode())])


@pytest.fixture
def gateways(fleet_db: Database, store: EmbeddedStore) -> Gateways:
    return Gateways(fleet_db, store)


def members(db: Database, campaign: int) -> dict[str, CampaignDevice]:
    from fleet.registry.models import Device

    with db.transaction() as s:
        rows = s.execute(select(CampaignDevice, Device.key).join(
            Device, CampaignDevice.device_id == Device.id)
            .where(CampaignDevice.campaign_id == campaign)).all()
        return {key: m for m, key in rows}


def outbox(db: Database, settings: Any) -> list[dict[str, Any]]:
    """OTA commands waiting for the publisher, as the gateway will receive them (the
    publisher's own claim and wire fields: the download token); the claim is given back."""
    claimer = control.new_claimer()
    with db.transaction() as s:
        out = control.claim(s, claimer, limit=1000, wire={"ota": ota.wire_fields(settings)})
        control.release(s, claimer, [o.id for o in out])
    return [json.loads(o.payload) | {"_topic": o.topic, "_pk": o.id} for o in out
            if o.topic.endswith("/ota")]


def acked_by_broker(db: Database, limit: int = 1000) -> None:
    """The publisher got the broker's PUBACK for the first ``limit`` pending commands."""
    claimer = control.new_claimer()
    with db.transaction() as s:
        out = control.claim(s, claimer, limit=limit)
        control.mark_sent(s, claimer, [o.id for o in out])


# -- releases ---------------------------------------------------------------------------------
def test_a_signed_release_is_stored_with_its_metadata(client, world, kit, fleet_db) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    data = pack(kit.release((1, 4, 0), min_version=(1, 2, 0)), top="fire-1.4.0")
    r = upload(client, world, data)
    assert r.status_code == 201, r.text
    rel = r.json()
    assert {k: rel[k] for k in ("version", "min_version", "device_class", "board", "size",
                                "sha256")} == {
        "version": "1.4.0", "min_version": "1.2.0", "device_class": "fire", "board": "esp32",
        "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert set(rel["files"]) == {"app/main.py", "app/lib.py"}
    assert client.get(f"/api/v1/releases/{rel['id']}",
                      headers=world.headers("viewer")).json()["id"] == rel["id"]
    assert [x["id"] for x in client.get("/api/v1/releases",
                                        headers=world.headers("viewer")).json()] == [rel["id"]]
    # fire releases are hidden from a utility user who is not granted fire
    assert client.get("/api/v1/releases", headers=world.headers("utility")).json() == []
    again = upload(client, world, data)
    assert again.status_code == 409
    # the technician's own token downloads it; a viewer's does not
    got = client.get(f"/api/v1/releases/{rel['id']}/bundle", headers=world.headers("admin"))
    assert got.status_code == 200 and got.content == data
    assert client.get(f"/api/v1/releases/{rel['id']}/bundle",
                      headers=world.headers("viewer")).status_code == 403
    audit = client.get("/api/v1/audit", headers=world.headers("admin"),
                       params={"action": "release.uploaded"}).json()
    assert [(e["actor"], e["entity_id"]) for e in audit] == [("user:technician",
                                                              str(rel["id"]))]


def _tampered_manifest(kit: ReleaseKit) -> bytes:
    rel = kit.release()
    body = json.loads((rel / "manifest.json").read_text())
    body["board"] = "esp32s3"
    (rel / "manifest.json").write_text(json.dumps(body, sort_keys=True, separators=(",", ":")))
    return pack(rel)


def _tampered_file(kit: ReleaseKit) -> bytes:
    rel = kit.release()
    (rel / "files" / "app" / "main.py").write_text("print('evil__node!!!!')\n")  # same length
    return pack(rel)


def _short_file(kit: ReleaseKit) -> bytes:
    rel = kit.release()
    (rel / "files" / "app" / "lib.py").write_text("V = 1\n")
    return pack(rel)


def _extra_file(kit: ReleaseKit) -> bytes:
    rel = kit.release()
    (rel / "files" / "app" / "backdoor.py").write_text("x = 1\n")
    return pack(rel)


def _symlink(kit: ReleaseKit) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO(pack(kit.release()))
    buf.seek(0, 2)
    raw = bytearray(buf.getvalue())
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(bytes(raw)), mode="r:") as src, \
            tarfile.open(fileobj=out, mode="w") as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member))
        link = tarfile.TarInfo("files/app/link.py")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        dst.addfile(link)
    return out.getvalue()


REFUSALS = {
    "unsigned": lambda kit: pack(kit.release(key=None)),
    "mis-signed manifest": _tampered_manifest,
    "unknown key": lambda kit: kit.bundle(key="stranger"),
    "revoked key": lambda kit: kit.bundle(key="old"),
    "below the trust's floor": lambda kit: kit.bundle((0, 9, 0), min_version=(0, 9, 0)),
    "tampered file": _tampered_file,
    "truncated file": _short_file,
    "file outside the manifest": _extra_file,
    "symlink in the tar": _symlink,
    "not a tar": lambda kit: b"PK\x03\x04 this is a zip, not a tar" * 40,
    "gzip, not plain tar": lambda kit: __import__("gzip").compress(kit.bundle()),
    "empty": lambda kit: b"",
}
EXPECTED = {
    "unsigned": ("unsigned", 1), "mis-signed manifest": ("bad_signature", 2),
    "unknown key": ("unknown_key", 3), "revoked key": ("revoked_key", 4),
    "below the trust's floor": ("downgrade", 5), "tampered file": ("bad_hash", 6),
    "truncated file": ("bad_size", 7), "file outside the manifest": ("malformed", 1),
    "symlink in the tar": ("malformed", 1), "not a tar": ("malformed", 1),
    "gzip, not plain tar": ("malformed", 1), "empty": ("malformed", 1),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_the_fleet_refuses_what_a_device_would_refuse_and_names_the_reason(  # type: ignore[no-untyped-def]
        case: str, client, world, kit, fleet_db) -> None:
    r = upload(client, world, REFUSALS[case](kit))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == "urn:edgefleet:problem:release-refused"
    assert (problem["reason"], problem["reason_code"]) == EXPECTED[case]
    assert problem["reason"] in problem["detail"]
    assert client.get("/api/v1/releases", headers=world.headers("admin")).json() == []


def test_without_a_trust_configured_nothing_is_stored(tmp_path, db_url, kit) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from fleet.app import create_app

    settings = settings_for(db_url, tmp_path)
    db = Database.from_url(settings.database_url)
    try:
        w = World(db, settings)
        with TestClient(create_app(settings, database=db)) as c:
            r = upload(c, w, kit.bundle())
        assert r.status_code == 409 and r.json()["type"].endswith("release-trust-missing")
    finally:
        db.dispose()


def test_an_unreadable_trust_file_is_refused_at_start_up(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from fleet.ota.settings import OtaSettings

    bad = tmp_path / "trust.json"
    bad.write_text('{"keys": {"version": 1, "keys": {}, "revoked": []}, "floor": [1, 0, 0]}')
    with pytest.raises(ValidationError, match="at least one key"):
        OtaSettings(release_trust=bad)
    with pytest.raises(ValidationError, match="cannot read"):
        OtaSettings(release_trust=tmp_path / "missing.json")


# -- campaigns --------------------------------------------------------------------------------
def release_id(client: Any, world: World, kit: ReleaseKit, version: tuple[int, int, int]
               = (1, 4, 0)) -> int:
    r = upload(client, world, kit.bundle(version), who="admin")
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def create(client: Any, world: World, who: str = "admin", **body: Any) -> Any:
    return client.post("/api/v1/campaigns", headers=world.headers(who), json=body)


def test_a_campaign_rolls_out_in_waves_and_a_failed_wave_halts_it(  # type: ignore[no-untyped-def]
        client, world, kit, fleet_db, fleet_settings, gateways, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    add_fire(fleet_db, world, 8)            # 9 fire detectors at site A, 1 at site B
    rid = release_id(client, world, kit)
    r = create(client, world, name="fire 1.4.0", release_id=rid)
    assert r.status_code == 201, r.text
    c = r.json()
    assert (c["state"], c["current_wave"], c["wave_count"], c["devices"]) == ("running", 1, 4, 10)
    assert [w["devices"] for w in c["wave_progress"]] == [1, 1, 3, 5]
    assert c["wave_progress"][0]["in_flight"] == 1
    # wave 1: one OtaCommand start, with the bundle URL, digest, size and a download token
    [cmd] = outbox(fleet_db, fleet_settings)
    release = client.get(f"/api/v1/releases/{rid}", headers=world.headers("admin")).json()
    assert cmd["op"] == "start" and cmd["campaign"] == str(c["id"])
    assert (cmd["release"], cmd["url"], cmd["sha256"], cmd["size"]) == (
        "1.4.0", f"{BASE}/api/v1/releases/{rid}/bundle", release["sha256"], release["size"])
    from contracts.mqtt import OtaCommand, parse_topic

    OtaCommand.model_validate(cmd)  # the contract's own model takes it
    canary = parse_topic(cmd["_topic"])
    # the token downloads this release, and is in no command row the API shows
    got = client.get(cmd["url"].removeprefix(BASE),
                     headers={"Authorization": f"Bearer {cmd['token']}"})
    assert got.status_code == 200 and got.headers["x-content-sha256"] == release["sha256"]
    shown = client.get(f"/api/v1/devices/{world.devices.get(canary.device, 0) or 1}/commands",
                       headers=world.headers("admin"))
    assert cmd["token"] not in shown.text
    with fleet_db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(DeviceCommand).where(
            DeviceCommand.body.is_not(None))) >= 1
        assert all(cmd["token"] not in json.dumps(b) for b in s.scalars(
            select(DeviceCommand.body)))
    # the canary goes through every phase and is confirmed
    assert canary.device is not None
    for phase, extra in (("accepted", {}), ("downloading", {}), ("verified", {}),
                         ("queued", {}), ("transferring", {"offset": 4096, "size": 10240}),
                         ("transferring", {"offset": 10240, "size": 10240}),
                         ("committed", {}), ("trial", {})):
        gateways.event(canary.gateway, canary.device, c["id"], phase, **extra)
    view = client.get(f"/api/v1/campaigns/{c['id']}/devices",
                      headers=world.headers("admin")).json()
    [row] = [d for d in view if d["device"] == canary.device]
    assert (row["state"], row["offset"], row["size"], row["wave"]) == ("trial", 10240, 10240, 1)
    gateways.event(canary.gateway, canary.device, c["id"], "confirmed")
    tick(fleet_db, fleet_settings)
    c = client.get(f"/api/v1/campaigns/{c['id']}", headers=world.headers("admin")).json()
    assert (c["current_wave"], c["by_state"].get("confirmed")) == (2, 1)
    # wave 2's device fails on the device itself: 1 of 1 -> the campaign halts on its own
    [second] = [x for x in outbox(fleet_db, fleet_settings) if x["_topic"] != cmd["_topic"]]
    dev2 = parse_topic(second["_topic"])
    assert dev2.device is not None
    gateways.event(dev2.gateway, dev2.device, c["id"], "failed", reason="rolled_back")
    tick(fleet_db, fleet_settings)
    c = client.get(f"/api/v1/campaigns/{c['id']}", headers=world.headers("admin")).json()
    assert c["state"] == "halted" and "1 of 1" in c["halt_reason"]
    assert c["halt"] == {"code": "failure_rate", "wave": 2, "failed": 1, "finished": 1,
                         "threshold": c["failure_threshold"]}
    assert c["wave_progress"][1]["failed"] == 1 and c["wave_progress"][2]["pending"] == 3
    tick(fleet_db, fleet_settings)
    assert len(outbox(fleet_db, fleet_settings)) == 2        # nothing more offered
    assert client.post(f"/api/v1/campaigns/{c['id']}/resume",
                       headers=world.headers("admin")).status_code == 409
    audit = client.get("/api/v1/audit", headers=world.headers("admin"),
                       params={"entity_type": "campaign", "entity_id": str(c["id"])}).json()
    assert [e["action"] for e in audit] == ["campaign.created", "campaign.offered",
                                            "campaign.wave", "campaign.offered",
                                            "campaign.halted"]
    device_audit = client.get("/api/v1/audit", headers=world.headers("admin"),
                              params={"action": "ota.failed"}).json()
    assert [(e["actor"], e["detail"]["reason"]) for e in device_audit] == [
        (f"gateway:{dev2.gateway}", "rolled_back")]
    assert cmd["token"] not in caplog.text and second["token"] not in caplog.text


def test_the_device_reports_the_new_firmware_after_confirmed(  # type: ignore[no-untyped-def]
        client, world, kit, fleet_db, fleet_settings, gateways) -> None:
    add_fire(fleet_db, world, 0)
    rid = release_id(client, world, kit)
    c = create(client, world, name="one", release_id=rid, area_id=world.ward_a).json()
    assert c["devices"] == 1  # fire-a only: ward B's detector is not targeted
    gateways.event("gw-a", "fire-a", c["id"], "confirmed")
    state = {"v": 1, "device": "fire-a", "class": "fire", "ts": "2026-12-02T05:01:00Z",
             "epoch": "ep", "seq": 99, "online": True, "firmware": "1.4.0"}
    gateways.ingest.process([Inbound(device_topic("gw-a", "fire-a", "state"),
                                     json.dumps(state).encode())])
    [row] = client.get(f"/api/v1/campaigns/{c['id']}/devices",
                       headers=world.headers("technician")).json()
    assert (row["state"], row["from_version"], row["firmware"]) == ("confirmed", "1.3.0",
                                                                    "1.4.0")
    tick(fleet_db, fleet_settings)
    c = client.get(f"/api/v1/campaigns/{c['id']}", headers=world.headers("admin")).json()
    assert c["state"] == "completed" and c["ended_at"] is not None
    # the token died with the campaign
    with fleet_db.transaction() as s:
        nonce = s.scalar(select(ota.Campaign.token_nonce))
    token = ota.download_token(fleet_settings, nonce)
    assert client.get(f"/api/v1/releases/{rid}/bundle",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_targeting_by_tag_and_current_version(client, world, kit, fleet_db) -> None:  # type: ignore[no-untyped-def]
    tagged = add_fire(fleet_db, world, 3, tags=["tower-1"])
    add_fire(fleet_db, world, 2, firmware="1.2.0", tags=["tower-1"])
    rid = release_id(client, world, kit)
    c = create(client, world, name="tower", release_id=rid, tags=["tower-1"],
               from_versions=["1.3.0"], waves=[100]).json()
    assert c["devices"] == 3 and c["wave_count"] == 1
    assert {d["device"] for d in client.get(f"/api/v1/campaigns/{c['id']}/devices",
                                            headers=world.headers("admin")).json()} == set(tagged)
    # the same devices are in a live campaign already: not targeted twice
    r = create(client, world, name="again", release_id=rid, tags=["tower-1"],
               from_versions=["1.3.0"])
    assert r.status_code == 422 and r.json()["type"].endswith("no-devices")
    # nobody left to update: a clear 422, not an empty campaign
    r = create(client, world, name="none", release_id=rid, from_versions=["0.1.0"])
    assert r.status_code == 422 and r.json()["type"].endswith("no-devices")
    r = create(client, world, name="x", release_id=rid, device_class="flood")
    assert r.status_code == 422
    r = create(client, world, name="x", release_id=rid, waves=[50, 10])
    assert r.status_code == 422


def test_a_technician_runs_campaigns_only_in_their_own_area(client, world, kit, fleet_db) -> None:  # type: ignore[no-untyped-def]
    add_fire(fleet_db, world, 2, site="a")
    add_fire(fleet_db, world, 2, site="b")
    rid = release_id(client, world, kit)
    assert create(client, world, "technician", name="B", release_id=rid,
                  area_id=world.ward_b).status_code == 404
    city = create(client, world, "admin", name="city", release_id=rid,
                  area_id=world.city).json()
    assert city["devices"] == 6
    # the ward-A technician sees the city campaign (their devices are in it), only those
    seen = client.get(f"/api/v1/campaigns/{city['id']}", headers=world.headers("technician"))
    assert seen.json()["devices"] == 3
    assert client.post(f"/api/v1/campaigns/{city['id']}/pause",
                       headers=world.headers("technician")).status_code == 403
    # a detector installed since: the technician's own campaign, in their ward by default
    add_fire(fleet_db, world, 1, site="a")
    mine = create(client, world, "technician", name="ward A", release_id=rid).json()
    assert mine["devices"] == 1
    assert client.post(f"/api/v1/campaigns/{mine['id']}/pause",
                       headers=world.headers("technician")).json()["state"] == "paused"
    assert client.post(f"/api/v1/campaigns/{mine['id']}/pause",
                       headers=world.headers("viewer")).status_code == 403
    assert client.get(f"/api/v1/campaigns/{mine['id']}",
                      headers=world.headers("utility")).status_code == 404  # fire, no grant
    assert client.get(f"/api/v1/campaigns/{mine['id']}",
                      headers=world.headers("utility-fire")).status_code == 200


def test_pause_resume_and_cancel_tell_devices_in_flight_to_stop(  # type: ignore[no-untyped-def]
        client, world, kit, fleet_db, fleet_settings, gateways) -> None:
    add_fire(fleet_db, world, 3)
    rid = release_id(client, world, kit)
    c = create(client, world, "technician", name="c", release_id=rid, waves=[50, 100]).json()
    assert [w["devices"] for w in c["wave_progress"]] == [2, 2]  # ward A: fire-a and 3 more
    h = world.headers("technician")
    started = outbox(fleet_db, fleet_settings)
    assert len(started) == 2
    acked_by_broker(fleet_db)
    # one is committed already, one transferring, when the technician pauses
    devs = [t.split("/")[4] for t in (x["_topic"] for x in started)]
    gateways.event("gw-a", devs[0], c["id"], "committed")
    gateways.event("gw-a", devs[1], c["id"], "transferring", offset=10, size=100)
    assert client.post(f"/api/v1/campaigns/{c['id']}/pause", headers=h).status_code == 200
    gateways.event("gw-a", devs[0], c["id"], "confirmed")  # in flight: they finish
    gateways.event("gw-a", devs[1], c["id"], "confirmed")
    tick(fleet_db, fleet_settings)  # paused: wave 2 is not offered
    assert outbox(fleet_db, fleet_settings) == []
    r = client.post(f"/api/v1/campaigns/{c['id']}/resume", headers=h)
    assert r.json()["state"] == "running" and r.json()["current_wave"] == 2
    wave2 = outbox(fleet_db, fleet_settings)
    assert len(wave2) == 2
    acked_by_broker(fleet_db, limit=1)  # one published, one not
    published, unpublished = wave2
    gateways.event("gw-a", published["_topic"].split("/")[4], c["id"], "transferring",
                   offset=1, size=100)
    r = client.post(f"/api/v1/campaigns/{c['id']}/cancel", headers=h)
    assert r.json()["state"] == "cancelled"
    cancels = outbox(fleet_db, fleet_settings)
    assert [(x["op"], x["_topic"]) for x in cancels] == [("cancel", published["_topic"])]
    assert "token" not in cancels[0] and "url" not in cancels[0]
    # the unpublished start never leaves the outbox; the campaign's token is dead
    assert unpublished["id"] not in {x["id"] for x in outbox(fleet_db, fleet_settings)}
    assert client.get(f"/api/v1/releases/{rid}/bundle", headers={
        "Authorization": f"Bearer {published['token']}"}).status_code == 401
    gateways.event("gw-a", published["_topic"].split("/")[4], c["id"], "cancelled")
    c = client.get(f"/api/v1/campaigns/{c['id']}", headers=h).json()
    assert c["by_state"] == {"confirmed": 2, "cancelled": 2}
    assert client.post(f"/api/v1/campaigns/{c['id']}/resume", headers=h).status_code == 409


def test_a_gateway_that_refuses_the_command_fails_the_device(  # type: ignore[no-untyped-def]
        client, world, kit, fleet_db, fleet_settings, gateways) -> None:
    add_fire(fleet_db, world, 0)
    rid = release_id(client, world, kit)
    c = create(client, world, name="c", release_id=rid, area_id=world.ward_a).json()
    [cmd] = outbox(fleet_db, fleet_settings)
    acked_by_broker(fleet_db)
    gateways.ack("gw-a", cmd["id"], False, "no OTA support")
    [row] = client.get(f"/api/v1/campaigns/{c['id']}/devices",
                       headers=world.headers("admin")).json()
    assert (row["state"], row["reason"], row["command_state"]) == (
        "failed", "gateway refused: no OTA support", "failed")


def test_a_release_the_device_itself_refuses_fails_it_with_the_devices_own_reason(  # type: ignore[no-untyped-def]
        client, world, kit, fleet_db, gateways) -> None:
    add_fire(fleet_db, world, 1)             # fire-a and one more at site A
    rid = release_id(client, world, kit)
    c = create(client, world, name="c", release_id=rid, area_id=world.ward_a,
               waves=[100]).json()
    [other] = [k for k in members(fleet_db, c["id"]) if k != "fire-a"]
    for dev in ("fire-a", other):
        for phase in ("accepted", "verified", "transferring", "committed"):
            gateways.event("gw-a", dev, c["id"], phase)
    # as gateway/ota.py reports the node's own check refusing the image (its register's code)
    gateways.event("gw-a", "fire-a", c["id"], "failed", reason="device_refused", code=3,
                   refusal="unknown_key", detail="the node refused the image: code 3")
    # a refusal field that is not a reason name is not copied into the row
    gateways.event("gw-a", other, c["id"], "failed", reason="device_refused", code=9,
                   refusal="<b>9</b>\n")
    rows = {r["device"]: r for r in client.get(f"/api/v1/campaigns/{c['id']}/devices",
                                               headers=world.headers("admin")).json()}
    assert (rows["fire-a"]["state"], rows["fire-a"]["reason"]) == (
        "failed", "device_refused: unknown_key")
    assert (rows[other]["state"], rows[other]["reason"]) == ("failed", "device_refused")
    audit = client.get("/api/v1/audit", headers=world.headers("admin"),
                       params={"action": "ota.failed"}).json()
    assert sorted((e["actor"], e["detail"]["reason"]) for e in audit) == [
        ("gateway:gw-a", "device_refused"), ("gateway:gw-a", "device_refused: unknown_key")]


def test_bad_and_stray_ota_events_change_nothing(  # type: ignore[no-untyped-def]
        client, world, kit, fleet_db, gateways) -> None:
    add_fire(fleet_db, world, 0)
    rid = release_id(client, world, kit)
    c = create(client, world, name="c", release_id=rid, area_id=world.ward_a).json()
    gateways.event("gw-a", "fire-a", c["id"], "transferring", offset=5, size=10)
    gateways.event("gw-a", "fire-a", c["id"] + 1, "failed")         # another campaign
    gateways.event("gw-a", "fire-a", c["id"], "failed", release="9.9.9")  # another release
    gateways.event("gw-b", "fire-b", c["id"], "failed")             # not in the campaign
    bad = {"v": 1, "device": "fire-a", "ts": "2026-12-02T05:00:00Z", "epoch": "ep",
           "seq": 1000, "event": "ota", "campaign": str(c["id"]), "release": "1.4.0",
           "phase": "exploded"}
    result = gateways.ingest.process([Inbound(device_topic("gw-a", "fire-a", "event"),
                                              json.dumps(bad).encode())])
    assert result.rejects == {("gw-a", "bad-ota-event"): 1}
    [row] = client.get(f"/api/v1/campaigns/{c['id']}/devices",
                       headers=world.headers("admin")).json()
    assert (row["state"], row["offset"]) == ("transferring", 5)


def test_a_replayed_old_outbox_never_moves_a_device_back(  # type: ignore[no-untyped-def]
        client, world, kit, fleet_db, gateways) -> None:
    """The gateway's SD card was replaced mid-campaign (a new epoch); its old outbox is drained
    later. Its stale 'transferring' and 'failed' must not undo what the new epoch said."""
    add_fire(fleet_db, world, 0)
    rid = release_id(client, world, kit)
    c = create(client, world, name="c", release_id=rid, area_id=world.ward_a).json()

    def say(phase: str, epoch: str, seq: int, ts: str, **extra: Any) -> None:
        gateways.event("gw-a", "fire-a", c["id"], phase, epoch=epoch, seq=seq,
                       ts=f"2026-12-02T05:{ts}Z", **extra)

    def state() -> tuple[str, int]:
        [row] = client.get(f"/api/v1/campaigns/{c['id']}/devices",
                           headers=world.headers("admin")).json()
        return row["state"], row["offset"]

    say("transferring", "old-card", 7, "01:00", offset=100, size=1000)
    say("transferring", "new-card", 1, "05:00", offset=900, size=1000)
    say("committed", "new-card", 2, "06:00", offset=1000, size=1000)
    say("transferring", "old-card", 8, "02:00", offset=200, size=1000)   # the old card drained
    say("failed", "old-card", 9, "03:00", reason="timeout")
    assert state() == ("committed", 1000)
    say("transferring", "new-card", 3, "06:30", offset=10, size=1000)    # after the commit
    assert state() == ("committed", 1000)
    say("trial", "new-card", 4, "07:00")
    say("confirmed", "new-card", 5, "08:00")
    say("transferring", "old-card", 10, "09:00", offset=300, size=1000)  # after the end
    assert state() == ("confirmed", 1000)


def test_verifying_an_upload_does_not_hold_up_other_requests(  # type: ignore[no-untyped-def]
        client, world, kit, monkeypatch) -> None:
    """Verification hashes every file of a release that may be megabytes: while it runs, the
    fleet still answers (the event loop is not where it runs)."""
    started, released = threading.Event(), threading.Event()
    real_verify = ota.verify_bundle

    def slow_verify(data: bytes, verifier: Any) -> Any:
        started.set()
        released.wait(10)
        return real_verify(data, verifier)

    monkeypatch.setattr(ota, "verify_bundle", slow_verify)
    data = kit.bundle()
    answers: list[Any] = []
    uploader = threading.Thread(target=lambda: answers.append(upload(client, world, data)))
    uploader.start()
    try:
        assert started.wait(10), "the upload never reached the verification"
        listed = client.get("/api/v1/releases", headers=world.headers("viewer"))
        answered_during_verify = not released.is_set()
    finally:
        released.set()
        uploader.join(20)
    assert listed.status_code == 200 and listed.json() == []
    assert answered_during_verify, "the list waited for the verification"
    assert answers and answers[0].status_code == 201, answers


def test_a_device_that_never_reports_times_out_and_is_told_to_cancel(  # type: ignore[no-untyped-def]
        client, world, kit, fleet_db, fleet_settings) -> None:
    add_fire(fleet_db, world, 0)
    rid = release_id(client, world, kit)
    c = create(client, world, name="c", release_id=rid, area_id=world.ward_a).json()
    with fleet_db.transaction() as s:
        assert ota.advance_due(s, fleet_settings, utcnow() + timedelta(seconds=599)) == 1
        ota.advance_due(s, fleet_settings, utcnow() + timedelta(seconds=601))
    c = client.get(f"/api/v1/campaigns/{c['id']}", headers=world.headers("admin")).json()
    assert c["state"] == "halted" and c["by_state"] == {"failed": 1}
    [row] = client.get(f"/api/v1/campaigns/{c['id']}/devices",
                       headers=world.headers("admin")).json()
    assert row["reason"] == "timeout"
    assert [x["op"] for x in outbox(fleet_db, fleet_settings)] == ["start", "cancel"]


# -- hazards ----------------------------------------------------------------------------------
def test_a_campaign_does_not_touch_a_site_with_a_fire_until_the_alarm_clears(  # type: ignore[no-untyped-def]
        client, world, kit, fleet_db, fleet_settings, gateways) -> None:
    add_fire(fleet_db, world, 1, site="a")   # fire-a + 1 at site A (gw-a), fire-b at site B
    gateways.alarm("gw-a", "fire-a", "raised")  # smoke at the market, through ingest
    rid = release_id(client, world, kit)
    c = create(client, world, name="city", release_id=rid, waves=[100]).json()
    assert c["devices"] == 3 and c["held_by_hazard"] == 2
    assert {x["_topic"].split("/")[2] for x in outbox(fleet_db, fleet_settings)} == {"gw-b"}
    tick(fleet_db, fleet_settings)
    assert {x["_topic"].split("/")[2] for x in outbox(fleet_db, fleet_settings)} == {"gw-b"}
    # a flood alarm at site A keeps it frozen after the smoke clears
    gateways.alarm("gw-a", "flood-a", "raised", cls="flood")
    gateways.alarm("gw-a", "fire-a", "cleared")
    tick(fleet_db, fleet_settings)
    assert {x["_topic"].split("/")[2] for x in outbox(fleet_db, fleet_settings)} == {"gw-b"}
    gateways.alarm("gw-a", "flood-a", "cleared", cls="flood")
    tick(fleet_db, fleet_settings)
    gateways_offered = sorted(x["_topic"].split("/")[2] for x in outbox(fleet_db, fleet_settings))
    assert gateways_offered == ["gw-a", "gw-a", "gw-b"]
    c = client.get(f"/api/v1/campaigns/{c['id']}", headers=world.headers("admin")).json()
    assert c["held_by_hazard"] == 0


def test_a_confirmed_fire_holds_its_site_until_a_person_resolves_it_then_the_campaign_goes_on(  # type: ignore[no-untyped-def]
        client, world, kit, fleet_db, fleet_settings, gateways) -> None:
    add_fire(fleet_db, world, 0)
    # smoke and heat at the market: the fleet raises the site's confirmed_fire beside them
    gateways.alarm("gw-a", "fire-a", "raised")
    gateways.alarm("gw-a", "fire-a", "raised", type_="heat_fixed")
    h = world.headers("admin")
    [confirmed] = [a for a in client.get("/api/v1/alarms", headers=h).json()
                   if a["type"] == "confirmed_fire"]
    rid = release_id(client, world, kit)
    c = create(client, world, name="city", release_id=rid, waves=[100]).json()
    assert (c["devices"], c["held_by_hazard"]) == (2, 1)
    # the detector stops reporting (the fire is out, it was reset): the confirmed fire is
    # still open, nobody has closed the incident yet
    gateways.alarm("gw-a", "fire-a", "cleared")
    gateways.alarm("gw-a", "fire-a", "cleared", type_="heat_fixed")
    tick(fleet_db, fleet_settings)
    assert {x["_topic"].split("/")[2] for x in outbox(fleet_db, fleet_settings)} == {"gw-b"}
    # the fire officer acknowledges and resolves it: the site's devices are offered the update
    for action in ("acknowledge", "resolve"):
        r = client.post(f"/api/v1/alarms/{confirmed['id']}/{action}", headers=h,
                        json={"comment": "fire out, detector reset"})
        assert r.status_code == 200, r.text
    tick(fleet_db, fleet_settings)
    assert sorted(x["_topic"].split("/")[2] for x in outbox(fleet_db, fleet_settings)) == [
        "gw-a", "gw-b"]
    c = client.get(f"/api/v1/campaigns/{c['id']}", headers=h).json()
    assert c["held_by_hazard"] == 0


# -- replicas ---------------------------------------------------------------------------------
def test_two_replicas_ticking_together_offer_each_device_once_on_postgresql(  # type: ignore[no-untyped-def]
        pg_url, tmp_path, kit) -> None:
    from fastapi.testclient import TestClient

    from fleet.app import create_app
    from fleet.ota.settings import OtaSettings

    settings = settings_for(pg_url, tmp_path, ota=OtaSettings(release_trust=kit.trust,
                                                              bundle_base_url=BASE))
    db = Database.from_url(pg_url)
    try:
        w = World(db, settings)
        add_fire(db, w, 30)
        with TestClient(create_app(settings, database=db)) as c:
            rid = release_id(c, w, kit)
            camp = create(c, w, name="c", release_id=rid, waves=[10, 100]).json()
        first = {x["_topic"] for x in outbox(db, settings)}
        assert len(first) == 4
        with db.transaction() as s:
            for row in s.scalars(select(CampaignDevice).where(CampaignDevice.state == "sent")):
                row.state = "confirmed"
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def replica() -> None:
            try:
                barrier.wait()
                for _ in range(3):
                    tick(db, settings)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=replica) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        topics = [x["_topic"] for x in outbox(db, settings)]
        # the first wave's 4 starts and the second wave's 28, each device exactly once
        assert len(topics) == 32 and len(set(topics)) == 32
        assert len(members(db, camp["id"])) == 32
    finally:
        db.dispose()


# -- end to end through Mosquitto ---------------------------------------------------------------
def test_over_mqtt_the_gateway_gets_the_offer_downloads_and_reports_to_confirmed(  # type: ignore[no-untyped-def]
        fleet_settings, fleet_db, world, kit, tmp_path) -> None:
    """The app's own ingest: the start command reaches the gateway's cmd/ topic through the
    broker, the gateway downloads the bundle with the token it carries, and its OtaEvents and
    ack, published on the broker, drive the campaign."""
    from fastapi.testclient import TestClient

    from contracts.mqtt import OtaCommand, command_filter
    from fleet.app import create_app
    from fleet.ingest.settings import IngestSettings
    from tests.fleet.ingest_harness import FleetBroker, publish_lines, wait_until
    from tests.gateway.mosquitto import Subscriber

    broker = FleetBroker(tmp_path / "mosquitto")
    broker.start()
    try:
        settings = fleet_settings.model_copy(update={"ingest": IngestSettings(
            host=broker.host, port=broker.port, client_id="ota-ingest", batch_wait_s=0.01,
            command_poll_s=0.1)})
        add_fire(fleet_db, world, 0)
        app = create_app(settings, database=fleet_db)
        with TestClient(app) as client, Subscriber(broker, command_filter("gw-a")) as gateway:
            wait_until(lambda: app.state.ingest_metrics.connected, 10, "ingest connected")
            rid = release_id(client, world, kit)
            c = create(client, world, "technician", name="mqtt", release_id=rid).json()
            [msg] = gateway.wait_count(1, timeout=15)
            assert msg.topic == "edgefleet/v1/gw-a/cmd/fire-a/ota"
            offer = OtaCommand.model_validate_json(msg.payload)
            assert offer.op == "start" and offer.token and offer.url
            bundle = client.get(offer.url.removeprefix(BASE),
                                headers={"Authorization": f"Bearer {offer.token}"})
            import hashlib

            assert bundle.status_code == 200
            assert (len(bundle.content), hashlib.sha256(bundle.content).hexdigest()) == (
                offer.size, offer.sha256)
            publish_lines(broker, {ack_topic("gw-a"): [json.dumps(
                {"v": 1, "id": offer.id, "ok": True})]})
            events = [json.dumps({"v": 1, "device": "fire-a", "ts": "2026-12-02T05:00:00Z",
                                  "epoch": "ep", "seq": i, "event": "ota",
                                  "campaign": offer.campaign, "release": "1.4.0",
                                  "phase": phase})
                      for i, phase in enumerate(("accepted", "transferring", "trial",
                                                 "confirmed"), 1)]
            publish_lines(broker, {device_topic("gw-a", "fire-a", "event"): events})

            def row() -> dict[str, Any]:
                [r] = client.get(f"/api/v1/campaigns/{c['id']}/devices",
                                 headers=world.headers("technician")).json()
                return r  # type: ignore[no-any-return]

            wait_until(lambda: row()["state"] == "confirmed", 15, "the device confirmed")
            wait_until(lambda: row()["command_state"] == "ok", 15, "the gateway's ack")
    finally:
        broker.stop()
