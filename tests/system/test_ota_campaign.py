"""Issue 10's OTA acceptance, the whole stack at once: a release signed with provisioning's tools
is uploaded to the real fleet through its API, a campaign created through the API rolls it out,
the fleet's command outbox offers it over a real Mosquitto to the real gateway process, which
downloads the bundle from the fleet with the campaign's token, verifies it, moves it through
the OTA register window to MicroPython nodes on paced 115200-baud buses, watches their trial
and reports every phase back; the fleet's ingest applies the reports to the campaign and the
nodes' new identity (firmware version) to its registry. See tests/system/site.py."""

from __future__ import annotations

import json
import runpy
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from contracts.mqtt import OtaEvent, command_topic, device_topic
from contracts.release import Downgrade, UnknownKey
from hardware.mpy import FIRMWARE_APP
from tests.gateway.otafleet import app_source, make_keys
from tests.system.site import GATEWAY, FleetSite, compile_once, dump, signed_release, versions_of

#: Two buses of the pump station, one node of every class; one transfer per bus at a time,
#: the two buses in parallel.
EVERY_CLASS = {"riser": [(1, "fire", "fire-1"), (2, "flood", "flood-1")],
               "pump-room": [(1, "water", "water-1"), (2, "air", "air-1")]}
#: What the nodes run before any update.
RUNNING: tuple[int, int, int] = runpy.run_path(str(FIRMWARE_APP / "version.py"))["VERSION"]
#: Three fire detectors on one riser: waves of 50 % then 100 % make a first wave of two.
THREE_FIRE = {"riser": [(1, "fire", "fire-1"), (2, "fire", "fire-2"), (3, "fire", "fire-3")]}


@pytest.fixture
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FleetSite]:
    s = FleetSite(tmp_path, request.param)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def first_versions(site: FleetSite) -> dict[str, str]:
    """Wait until the registry knows what every node of the site runs: the gateway polls
    them, publishes their state, and the fleet's ingest stores it."""
    def known() -> dict[str, str] | None:
        seen = site.firmware()
        return {k: v for k, v in seen.items() if v} if all(seen.values()) else None
    versions: dict[str, str] = site.wait_for("the registry to show every node's firmware",
                                             known, 90, site.gateway_tail)
    return versions


def ota_events(site: FleetSite, device: str) -> list[dict[str, Any]]:
    assert site.mqtt is not None
    out = []
    for m in list(site.mqtt.messages):
        if m.topic == device_topic(GATEWAY, device, "event"):
            body = json.loads(m.payload)
            if body.get("event") == "ota":
                OtaEvent.model_validate_json(m.payload)  # the contract, as ingest reads it
                out.append(body)
    return out


def ota_commands(site: FleetSite, device: str) -> list[dict[str, Any]]:
    assert site.mqtt is not None
    return [json.loads(m.payload) for m in list(site.mqtt.messages)
            if m.topic == command_topic(GATEWAY, device, "ota")]


def states(site: FleetSite, device: str) -> list[dict[str, Any]]:
    assert site.mqtt is not None
    return [json.loads(m.payload) for m in list(site.mqtt.messages)
            if m.topic == device_topic(GATEWAY, device, "state")]


def nothing_refused_or_lost(site: FleetSite) -> None:
    """Through transfers, reboots, crashes and roll-backs the fleet refused nothing the gateway
    sent and, once the last messages are in, misses no seq of any device."""
    assert site.ingest_rejects() == {}
    site.wait_for("every device's delivery accounted for without a gap",
                  lambda: not any(site.delivery_gaps().values()), 30,
                  lambda: str(site.delivery_gaps()))


def heard(site: FleetSite, what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    """Wait until the observer beside the gateway has heard it too: the fleet's ingest and
    this subscriber are two MQTT clients, and either may be a few messages ahead."""
    assert site.mqtt is not None
    site.mqtt.wait_for(lambda _messages: check(), timeout, what)


@pytest.mark.parametrize("site", [pytest.param(EVERY_CLASS, id="every-class-on-two-buses")],
                         indirect=True)
def test_a_signed_update_reaches_every_node_of_the_site_and_each_reports_the_new_version(
        site: FleetSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = first_versions(site)
    (old,) = set(before.values())
    new, new_text = (9, 1, 0), "9.1.0"
    assert versions_of(old) < new
    # One app, released for each class (a release names its class; the node checks it).
    source = app_source(tmp_path / "src-9.1.0", new)
    classes = list(dict.fromkeys(n.cls for n in site.nodes))
    compile_once(monkeypatch)
    releases = {cls: site.upload(signed_release(
        tmp_path / f"{cls}-9.1.0", site.keys, source, version=new, min_version=versions_of(old),
        device_class=cls)) for cls in classes}
    campaigns = {cls: site.post("/campaigns", {
        "name": f"{cls} {new_text}, Calmette", "release_id": releases[cls]["id"],
        "area_id": site.ids["ward"]}) for cls in classes}
    for cls, c in campaigns.items():
        # the site's node of that class, not the same class in the other ward
        assert c["devices"] == 1 and c["device_class"] == cls, c

    def all_done() -> bool:
        ended = {cls: site.get(f"/campaigns/{c['id']}")["state"] for cls, c in campaigns.items()}
        if set(ended.values()) & {"halted", "cancelled"}:
            raise AssertionError(f"a campaign stopped: {ended}\n{progress()}")
        return set(ended.values()) == {"completed"} and set(site.firmware().values()) == {
            new_text}

    def progress() -> str:
        rows = {cls: [(d["device"], d["state"], d["offset"], d["size"], d["reason"])
                      for d in site.get(f"/campaigns/{c['id']}/devices")]
                for cls, c in campaigns.items()}
        return f"campaigns: {rows}\nregistry: {site.firmware()}\n{site.gateway_tail()}"

    site.wait_for("every campaign completed and every node on 9.1.0", all_done, 180, progress)

    for cls, c in campaigns.items():
        (row,) = site.get(f"/campaigns/{c['id']}/devices")
        node = next(n for n in site.nodes if n.cls == cls)
        assert (row["device"], row["state"], row["firmware"]) == (node.key, "confirmed",
                                                                  new_text), row
        assert row["from_version"] == before[node.key] and row["offset"] == row["size"] > 0
    assert site.firmware() == {n.key: new_text for n in site.nodes}
    # The same classes in the other ward (registry only: no gateway there) were left out of
    # the campaigns (one device each, above) and never reported anything.
    far = site.get(f"/devices?area_id={site.ids['other_ward']}")["items"]
    assert len(far) == len(classes) and all(d["firmware"] is None for d in far)
    # What the gateway said on the way, as the plain observer heard it: every phase in order
    # up to the trial and its confirmation, and the node's identity (firmware version and
    # trial bit 3) booting the new image on trial and leaving it confirmed.
    heard(site, "every node's confirmation and its last state off trial", lambda: all(
        [e["phase"] for e in ota_events(site, n.key)][-1:] == ["confirmed"]
        and [(s["firmware"], "trial" in s["status"]) for s in states(site, n.key)][-1:]
        == [(new_text, False)] for n in site.nodes))
    for n in site.nodes:
        phases = [e["phase"] for e in ota_events(site, n.key) if e["phase"] != "transferring"]
        assert phases[0] == "accepted" and phases[-3:] == ["committed", "trial", "confirmed"], (
            n.key, phases)
        assert (new_text, True) in [(s["firmware"], "trial" in s["status"])
                                    for s in states(site, n.key)], n.key
        # the offer (at least once: the command outbox may publish again after a lost
        # PUBACK) carried the fleet's own bundle URL, the bundle's hash and a campaign token
        offers = ota_commands(site, n.key)
        assert offers and all(
            o["op"] == "start" and o["token"].startswith("efota_")
            and o["url"] == f"{site.url}/api/v1/releases/{releases[n.cls]['id']}/bundle"
            and o["sha256"] == releases[n.cls]["sha256"] for o in offers), offers
    for sim in site.sims.values():
        assert all(node.events.crash_resets == 0 and not node.events.stalled
                   for node in sim.nodes)
    # each node's own slot record: it boots the other slot now, confirmed
    for n in site.nodes:
        slots = site.slots(n.key)
        assert (slots["active"], slots["previous"], slots["trial"], slots["rolled_back"]) == (
            "b", "a", False, False), (n.key, slots)
    nothing_refused_or_lost(site)


@pytest.mark.parametrize("site", [pytest.param(THREE_FIRE, id="three-fire-on-one-riser")],
                         indirect=True)
def test_a_release_that_crash_loops_rolls_back_on_every_node_and_halts_its_campaign_in_the_first_wave(  # noqa: E501
        site: FleetSite, tmp_path: Path) -> None:
    before = first_versions(site)
    (old,) = set(before.values())
    # A release whose app raises at import: signed by the fleet's key and verified everywhere,
    # it passes every check and fails only when the node boots it.
    broken = site.upload(signed_release(
        tmp_path / "fire-9.2.0", site.keys,
        app_source(tmp_path / "src-9.2.0", (9, 2, 0), broken=True, tiny=True),
        version=(9, 2, 0), min_version=versions_of(old), device_class="fire",
        compiled=False))
    campaign = site.post("/campaigns", {"name": "fire 9.2.0, Calmette",
                                        "release_id": broken["id"], "area_id": site.ids["ward"],
                                        "waves": [50, 100]})
    assert (campaign["devices"], campaign["wave_count"]) == (3, 2), campaign
    path = f"/campaigns/{campaign['id']}"

    def halted_and_ended() -> list[dict[str, Any]] | None:
        state = site.get(path)["state"]
        if state in ("completed", "cancelled"):
            raise AssertionError(f"the campaign ended {state} instead of halting:\n"
                                 f"{dump(site.get(f'{path}/devices'))}")
        if state != "halted":
            return None
        rows: list[dict[str, Any]] = site.get(f"{path}/devices")
        first = [r for r in rows if r["wave"] == 1]
        return rows if all(r["state"] == "failed" for r in first) else None

    rows = site.wait_for("the campaign halted with its first wave failed", halted_and_ended,
                         120, lambda: f"{dump(site.get(f'{path}/devices'))}\n"
                                      f"{site.gateway_tail()}")
    final = site.get(path)
    assert final["current_wave"] == 1 and final["halt_reason"].startswith("wave 1:"), final
    first = [r for r in rows if r["wave"] == 1]
    (outside,) = [r for r in rows if r["wave"] == 2]
    assert len(first) == 2
    # every node of the first wave took the image, booted it on trial, crashed and fell back;
    # the gateway said why
    assert all(r["reason"] == "rolled_back" for r in first), first
    by_key = {n.key: n for n in site.nodes}
    sim = site.sims["riser"]
    heard(site, "the first wave's failures and rolled-back states", lambda: all(
        [e["phase"] for e in ota_events(site, r["device"])][-1:] == ["failed"]
        and ["rolled_back" in s["status"] for s in states(site, r["device"])][-1:] == [True]
        for r in first))
    for r in first:
        events = ota_events(site, r["device"])
        assert "committed" in [e["phase"] for e in events], (r["device"], events)
        assert events[-1]["reason"] == "rolled_back", events[-1]
        # it really booted the image and crashed (the supervisor counted the resets)
        node = sim.node(by_key[r["device"]].address)
        assert node.events.crash_resets >= 1 and not node.events.stalled, node.events.lines[-8:]
    # the node outside the first wave was never offered it: no command in the outbox, none on
    # the wire, no delivery at the gateway
    assert (outside["state"], outside["command_id"]) == ("pending", None), outside
    assert ota_commands(site, outside["device"]) == []
    assert ota_events(site, outside["device"]) == []
    assert sim.node(by_key[outside["device"]].address).events.crash_resets == 0
    # the fleet's audit trail says who decided what: the gateway failed each device, the
    # fleet itself halted the campaign
    audit = site.get("/audit?limit=1000")
    failed = [a for a in audit if a["action"] == "ota.failed"]
    assert sorted(a["entity_id"] for a in failed) == sorted(str(r["device_id"]) for r in first)
    assert all(a["actor"] == f"gateway:{GATEWAY}" and a["detail"]["reason"] == "rolled_back"
               for a in failed), failed
    assert [a["actor"] for a in audit if a["action"] == "campaign.halted"] == ["system"]
    # and every node runs the old version at the end: its own slot record (back on slot a;
    # the first wave's with the roll-back flag) and its identity as the gateway reads it
    for n in site.nodes:
        slots = site.slots(n.key)
        rolled = n.key != outside["device"]
        assert (slots["active"], slots["trial"], slots["rolled_back"]) == (
            "a", False, rolled), (n.key, slots)
    assert site.firmware() == {n.key: old for n in site.nodes}
    assert all(states(site, n.key)[-1]["firmware"] == old for n in site.nodes)
    nothing_refused_or_lost(site)


#: Two fire detectors on one riser that will not take the same release, each for a reason
#: of its own (see ``refusing_site``).
TWO_REFUSING = {"riser": [(1, "fire", "fire-stranger"), (2, "fire", "fire-floor")]}


@pytest.fixture
def refusing_site(tmp_path: Path) -> Iterator[FleetSite]:
    """The fleet and the gateway trust the fleet's key, but ``fire-stranger`` was flashed with
    another fleet's key set (the release's key is unknown to it) and ``fire-floor`` already
    holds the anti-rollback floor of the version it runs (anything older is a downgrade)."""
    s = FleetSite(tmp_path, TWO_REFUSING)
    stranger = make_keys(tmp_path / "another-fleet-keys", "release-other")
    s.node_trust = {"fire-stranger": json.loads(stranger.trust.read_text()),
                    "fire-floor": {**json.loads(s.keys.trust.read_text()),
                                   "floor": list(RUNNING)}}
    try:
        s.start()
        yield s
    finally:
        s.stop()


def test_a_release_the_device_itself_refuses_reports_the_devices_reason_up_to_the_fleet(
        refusing_site: FleetSite, tmp_path: Path) -> None:
    site = refusing_site
    before = first_versions(site)
    assert set(before.values()) == {".".join(map(str, RUNNING))}
    trust_before = {n.key: site.trust(n.key) for n in site.nodes}
    # 0.0.9, older than what the nodes run, signed with the fleet's key: the fleet's trust and
    # the gateway's (floor 0.0.0) take it; only the nodes' own check refuses it. A few hundred
    # bytes: the node checks the manifest at its verify boot, before it would run anything.
    old_release = (0, 0, 9)
    release = site.upload(signed_release(
        tmp_path / "fire-0.0.9", site.keys, app_source(tmp_path / "src-0.0.9", old_release,
                                                      tiny=True),
        version=old_release, min_version=old_release, device_class="fire", compiled=False))
    campaign = site.post("/campaigns", {"name": "fire 0.0.9, Calmette",
                                        "release_id": release["id"],
                                        "area_id": site.ids["ward"], "waves": [100]})
    assert campaign["devices"] == 2, campaign
    path = f"/campaigns/{campaign['id']}"

    def both_failed() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = site.get(f"{path}/devices")
        if any(r["state"] == "confirmed" for r in rows):
            raise AssertionError(f"a node took the release:\n{dump(rows)}")
        if site.get(path)["state"] != "halted":  # 2 of 2 failed: the timer halts it
            return None
        return rows if all(r["state"] == "failed" for r in rows) else None

    rows = site.wait_for("both devices failed and the campaign halted", both_failed, 60,
                         lambda: f"{dump(site.get(f'{path}/devices'))}\n{site.gateway_tail()}")
    expected = {"fire-stranger": UnknownKey, "fire-floor": Downgrade}
    # the fleet's campaign row names the device's own reason, as contracts.release says it
    assert {r["device"]: r["reason"] for r in rows} == {
        key: f"device_refused: {refusal.reason.replace(' ', '_')}"
        for key, refusal in expected.items()}, rows
    # and so does the audit trail, with the gateway that reported it
    audit = [a for a in site.get("/audit?limit=1000") if a["action"] == "ota.failed"]
    assert sorted((a["entity_id"], a["actor"], a["detail"]["reason"]) for a in audit) == sorted(
        (str(r["device_id"]), f"gateway:{GATEWAY}", r["reason"]) for r in rows), audit
    # Each node was sent the whole image and refused it at its own check: the gateway had
    # verified the bundle against its trust, committed the image and reported the node's code.
    heard(site, "both refusals", lambda: all(
        [e["phase"] for e in ota_events(site, key)][-1:] == ["failed"] for key in expected))
    for key, refusal in expected.items():
        events = ota_events(site, key)
        phases = [e["phase"] for e in events]
        assert "verified" in phases and "committed" in phases, (key, phases)
        assert (events[-1]["reason"], events[-1]["code"], events[-1]["refusal"]) == (
            "device_refused", refusal.code, refusal.reason.replace(" ", "_")), events[-1]
    # Every node still runs its old image, its trust untouched (no floor raised, no key
    # adopted), and never crashed.
    for n in site.nodes:
        slots = site.slots(n.key)
        assert (slots["active"], slots["trial"], slots["pending"], slots["rolled_back"]) == (
            "a", False, None, False), (n.key, slots)
        assert site.trust(n.key) == trust_before[n.key], n.key
        assert site.sims[n.bus].node(n.address).events.crash_resets == 0
    assert site.firmware() == before
    assert all(states(site, n.key)[-1]["firmware"] == before[n.key] for n in site.nodes)
    nothing_refused_or_lost(site)


#: Buses for the hazard test, where the wire time of two whole-app transfers in a row is not
#: what is tested (RS-485 transceivers run this fast on short runs).
FAST_BAUD = 921600
#: The pump station's two buildings, one gateway: the pump room's detector on one bus (the
#: gateway's own site), the office's on another, registered at a second site of the ward.
TWO_BUILDINGS = {"pump-room": [(1, "fire", "fire-pump-room")],
                 "office": [(1, "fire", "fire-office")]}


@pytest.fixture
def two_sites(tmp_path: Path) -> Iterator[FleetSite]:
    s = FleetSite(tmp_path, TWO_BUILDINGS, sites={"office": "Nhà điều hành Calmette"},
                  baud=FAST_BAUD, telemetry_ms=1000, confirm_trial_after_s=1.0)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def test_a_campaign_started_while_a_site_has_an_active_fire_alarm_does_not_touch_that_site_until_the_alarm_clears(  # noqa: E501
        two_sites: FleetSite, tmp_path: Path) -> None:
    site = two_sites
    office = site.feeds["office"]
    burning_id = site.ids["fire-office"]
    # A smouldering fire in the office: much smoke, little heat (12 kW never warms the
    # detector by the 10 K its rate-of-rise element needs, so there is no heat alarm and no
    # confirmed fire however long it burns on a slow machine). The detector latches its smoke
    # alarm, the gateway publishes it, the fleet holds it active. Lit first: it grows while
    # the stack comes up and the release is built.
    office.apply(1, "ignite", {"growth": 1.0, "max_kw": 12.0, "smokiness": 20.0})
    before = first_versions(site)
    (old,) = set(before.values())
    new, new_text = (9, 3, 0), "9.3.0"
    release = site.upload(signed_release(
        tmp_path / "fire-9.3.0", site.keys, app_source(tmp_path / "src-9.3.0", new),
        version=new, min_version=versions_of(old), device_class="fire"))

    def office_alarms(active: bool) -> list[dict[str, Any]]:
        alarms: list[dict[str, Any]] = site.get(
            f"/alarms?device_id={burning_id}&active={str(active).lower()}")
        return alarms

    def smoke_alarms(state: str) -> list[int]:
        """Where the observer heard the office's smoke alarm in ``state``."""
        assert site.mqtt is not None
        return [i for i, m in enumerate(list(site.mqtt.messages))
                if m.topic == device_topic(GATEWAY, "fire-office", "alarm")
                and json.loads(m.payload)["type"] == "smoke"
                and json.loads(m.payload)["state"] == state]

    heard(site, "the office's smoke alarm", lambda: bool(smoke_alarms("raised")), 60)
    # The fire is put out and the room vented at once; the detector stays latched in alarm
    # until someone resets it, and the fleet keeps the alarm active as long as it reports it.
    office.apply(1, "extinguish", {"tau_s": 0.5})
    office.apply(1, "ventilate", {"ach": 600})
    site.wait_for("the office's smoke alarm, active in the fleet",
                  lambda: [a for a in office_alarms(True) if a["type"] == "smoke"], 30,
                  site.gateway_tail)
    campaign = site.post("/campaigns", {"name": "fire 9.3.0, Calmette",
                                        "release_id": release["id"],
                                        "area_id": site.ids["ward"], "waves": [100]})
    assert (campaign["devices"], campaign["held_by_hazard"]) == (2, 1), campaign
    path = f"/campaigns/{campaign['id']}"

    def rows() -> dict[str, dict[str, Any]]:
        return {r["device"]: r for r in site.get(f"{path}/devices")}

    def held(row: dict[str, Any]) -> bool:
        return (row["state"], row["command_id"], row["sent_at"]) == ("pending", None, None)

    def pump_room_updated() -> bool:
        now = rows()
        if not held(now["fire-office"]):
            raise AssertionError(f"the office in alarm was offered the update:\n{dump(now)}")
        if now["fire-pump-room"]["state"] in ("failed", "cancelled"):
            raise AssertionError(f"the pump room's update failed:\n{dump(now)}")
        return now["fire-pump-room"]["state"] == "confirmed" \
            and site.firmware()["fire-pump-room"] == new_text

    site.wait_for("the pump room's detector on 9.3.0 while the office is in alarm",
                  pump_room_updated, 120, lambda: f"{dump(rows())}\n{site.gateway_tail()}")
    # The other site updated; the office, still in alarm, was not touched: its row waits
    # with no command, nothing was published to its cmd topic, the gateway holds no delivery
    # for it and the node has nothing staged.
    assert [a for a in office_alarms(True) if a["type"] == "smoke"], "the alarm must hold here"
    assert held(rows()["fire-office"])
    now = site.get(path)
    assert (now["state"], now["held_by_hazard"], now["by_state"]) == (
        "running", 1, {"confirmed": 1, "pending": 1}), now
    assert ota_commands(site, "fire-office") == [] and ota_events(site, "fire-office") == []
    assert "fire-office" not in site.gateway_jobs()
    assert site.slots("fire-office")["pending"] is None

    # The room is clear (below the pre-alarm threshold less its hysteresis, 2.0 - 0.5 %/m);
    # the fire officer resets the latched detector through the fleet; the detector stops
    # reporting its alarm and the fleet clears it (no one has to acknowledge it first: the
    # freeze follows what the device reports).
    site.wait_for("the office's air clear", lambda: office.truth(1)["smoke"] < 1.3, 60,
                  lambda: f"physics: {office.truth(1)}")
    assert held(rows()["fire-office"])
    reset = site.post(f"/devices/{burning_id}/commands", {"action": "reset"})
    site.wait_for("the office's alarm cleared in the fleet", lambda: not office_alarms(True),
                  30, lambda: f"reset: {reset}\n{dump(office_alarms(True))}\n"
                              f"{site.gateway_tail()}")

    def completed() -> bool:
        state = site.get(path)["state"]
        if state in ("halted", "cancelled"):
            raise AssertionError(f"the campaign stopped: {state}\n{dump(rows())}")
        return state == "completed" and set(site.firmware().values()) == {new_text}

    site.wait_for("the campaign completed with the office on 9.3.0", completed, 120,
                  lambda: f"{dump(rows())}\n{site.gateway_tail()}")
    final = rows()
    assert {k: (r["state"], r["firmware"]) for k, r in final.items()} == {
        "fire-pump-room": ("confirmed", new_text), "fire-office": ("confirmed", new_text)}
    # the office was offered the update only after its alarm cleared, by the fleet's clock
    # and on the wire
    cleared = max(datetime.fromisoformat(a["cleared_at"]) for a in office_alarms(False))
    assert datetime.fromisoformat(final["fire-office"]["sent_at"]) > cleared, (
        cleared, final["fire-office"])
    assert site.mqtt is not None
    smoke_cleared = smoke_alarms("cleared")
    offered = [i for i, m in enumerate(list(site.mqtt.messages))
               if m.topic == command_topic(GATEWAY, "fire-office", "ota")]
    assert smoke_cleared and offered and smoke_cleared[0] < offered[0], (smoke_cleared, offered)
    nothing_refused_or_lost(site)
