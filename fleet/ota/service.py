"""Releases and campaigns: upload (verified against the fleet's trust), download tokens, campaign
creation and control, the timer step, and OTA progress from ingest. No HTTP, no commit inside:
every function works in the caller's unit of work and audits what it changes there.

Download tokens. Gateways fetch a bundle with ``Authorization: Bearer <token>``; the token is
per campaign, scoped to its release, and dies with the campaign (or after ``ota.token_ttl_s``).
The database holds only a random nonce and the token's keyed hash: the token itself is
HMAC(secret_key, nonce), computed again when a command leaves the outbox
(:func:`wire_fields`), so neither the command rows the API shows nor a copy of the database
carry a usable token, and no token is ever logged.

Hazards. A device at a site with an active fire or flood alarm (the device still reports it) is
not offered an update: it waits, and the campaign's wave with it, until the alarm clears.
Transfers already running are left to finish (see docs/fleet.md for why).

Replicas. The timer step (:func:`advance_due`) locks each campaign row (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers) and offers a device
only by claiming its row (``UPDATE ... WHERE state = 'pending'``), so however many replicas run
the timer, each offer, timeout and halt happens once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import re
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts.mqtt import OtaEvent
from fleet.alarms.grouping import CORRELATIONS
from fleet.alarms.models import Alarm
from fleet.audit.service import SYSTEM, actor_gateway, record
from fleet.auth.rbac import FIRE_CLASS, Principal, in_subtree
from fleet.control.models import DeviceCommand
from fleet.core.db import utcnow
from fleet.core.errors import Conflict, FleetError, Forbidden, NotFound
from fleet.core.settings import Settings
from fleet.ota import waves as W
from fleet.ota.bundle import BundleRefused, load_trust, verify_bundle
from fleet.ota.models import Campaign, CampaignDevice, Release, ReleaseBundle
from fleet.ota.settings import check_waves
from fleet.registry.models import Area, Device, Gateway
from fleet.registry.service import get_area, visible_devices

__all__ = [
    "HAZARD_CLASSES", "CampaignSpec", "ReleaseRefused", "advance_due", "apply_command_ack",
    "apply_event", "bundle_for_token", "cancel", "create_campaign", "download_token",
    "get_campaign", "get_release", "hazard_sites", "list_campaigns", "list_releases", "pause",
    "resume", "upload_release", "wire_fields",
]

log = logging.getLogger(__name__)

#: Alarm classes that freeze a campaign at their site while active.
HAZARD_CLASSES = ("fire", "flood")
#: The site alarms correlation raises (no device reports them: a person resolves them).
CONFIRMED_TYPES = tuple(rule.name for rule in CORRELATIONS)
TOKEN_PREFIX = "efota_"


class ReleaseRefused(FleetError):
    status, code = 422, "release-refused"


def _version(v: Sequence[int]) -> str:
    return ".".join(str(p) for p in v)


# -- releases ---------------------------------------------------------------------------------
def _hides_class(user: Principal, device_class: str) -> bool:
    return device_class == FIRE_CLASS and not user.sees_fire


def upload_release(session: Session, settings: Settings, user: Principal, data: bytes
                   ) -> Release:
    """Verify a bundle against the configured trust and store it; :class:`ReleaseRefused`
    (problem+json with ``reason``) for anything a device would refuse."""
    ota = settings.ota
    if ota.release_trust is None:
        raise Conflict("no release trust is configured (ota.release_trust): the fleet stores "
                       "only releases it can verify", code="release-trust-missing")
    if len(data) > ota.release_max_bytes:
        raise FleetError(f"bundle is {len(data)} bytes, above ota.release_max_bytes "
                         f"({ota.release_max_bytes})", status=413, code="release-too-large")
    try:
        verifier = load_trust(ota.release_trust)
    except ValueError as exc:
        log.error("%s", exc)
        raise Conflict("the configured release trust cannot be read; see the server log",
                       code="release-trust-missing") from None
    try:
        manifest = verify_bundle(data, verifier)
    except BundleRefused as refused:
        log.warning("release upload by %s refused: %s", user.username, refused)
        raise ReleaseRefused(f"release refused ({refused.reason}): {refused.detail}",
                             reason=refused.reason, reason_code=refused.code) from None
    release = Release(version=_version(manifest.version),
                      min_version=_version(manifest.min_version),
                      device_class=manifest.device_class, board=manifest.board,
                      keyid=manifest.keyid, sha256=hashlib.sha256(data).hexdigest(),
                      size=len(data), uploaded_by=user.user_id or None,
                      files={k: {"size": f.size, "sha256": f.sha256}
                             for k, f in manifest.files.items()})
    exists = session.scalar(select(Release.id).where(
        Release.device_class == release.device_class, Release.board == release.board,
        Release.version == release.version))
    if exists is not None:
        raise Conflict(f"release {release.version} for {release.device_class}/{release.board} "
                       f"is already stored (release {exists})", code="release-exists")
    session.add(release)
    try:
        session.flush()
    except IntegrityError:  # another replica stored the same release meanwhile
        raise Conflict(f"release {release.version} is already stored",
                       code="release-exists") from None
    session.add(ReleaseBundle(release_id=release.id, data=data))
    record(session, f"user:{user.username}", "release.uploaded", "release", release.id,
           {"version": release.version, "class": release.device_class,
            "board": release.board, "keyid": release.keyid, "sha256": release.sha256,
            "size": release.size})
    log.info("release %s for %s/%s stored (%d bytes, key %s)", release.version,
             release.device_class, release.board, release.size, release.keyid)
    return release


def list_releases(session: Session, user: Principal) -> list[Release]:
    rows = session.scalars(select(Release).order_by(Release.id.desc()).limit(500))
    return [r for r in rows if not _hides_class(user, r.device_class)]


def get_release(session: Session, user: Principal, release_id: int) -> Release:
    release = session.get(Release, release_id)
    if release is None or _hides_class(user, release.device_class):
        raise NotFound(f"release {release_id} not found")
    return release


def bundle_bytes(session: Session, release_id: int) -> bytes:
    data = session.scalar(select(ReleaseBundle.data).where(
        ReleaseBundle.release_id == release_id))
    if data is None:
        raise NotFound(f"release {release_id} not found")
    return bytes(data)


# -- download tokens --------------------------------------------------------------------------
def _key(settings: Settings) -> bytes:
    return settings.secret_key.get_secret_value().encode()


def download_token(settings: Settings, nonce: str) -> str:
    """The campaign's download token (never stored; recomputed from its nonce)."""
    mac = hmac.new(_key(settings), f"ota-download:{nonce}".encode(), hashlib.sha256)
    return TOKEN_PREFIX + mac.hexdigest()


def token_hash(settings: Settings, token: str) -> str:
    return hmac.new(_key(settings), f"ota-token:{token}".encode(), hashlib.sha256).hexdigest()


def is_download_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)


def bundle_for_token(session: Session, settings: Settings, release_id: int, token: str,
                     now: datetime | None = None) -> tuple[Release, bytes]:
    """The bundle for a gateway holding a live campaign's token for this release."""
    from fleet.core.errors import Unauthorized

    now = now or utcnow()
    campaign = session.scalar(select(Campaign).where(
        Campaign.token_hash == token_hash(settings, token)))
    if campaign is None or campaign.state in ("completed", "cancelled") \
            or campaign.token_expires_at <= now:
        raise Unauthorized("the download token is unknown or expired")
    if campaign.release_id != release_id:
        raise Forbidden("the download token is for another release")
    return campaign.release, bundle_bytes(session, release_id)


def wire_fields(settings: Settings) -> Callable[[Session, DeviceCommand], dict[str, Any]]:
    """What an OTA start command carries on the wire but never in the database: the token.
    Passed to ``fleet.control.service.pending`` by the publisher."""

    def fill(session: Session, cmd: DeviceCommand) -> dict[str, Any]:
        if cmd.body.get("op") != "start":
            return {}
        nonce = session.scalar(select(Campaign.token_nonce).where(
            Campaign.id == int(cmd.body["campaign"])))
        return {} if nonce is None else {"token": download_token(settings, nonce)}

    return fill


# -- campaigns: visibility and control --------------------------------------------------------
def _overlaps(scope: str | None, path: str | None) -> bool:
    return scope is None or path is None or path.startswith(scope) or scope.startswith(path)


def campaign_visible(user: Principal, campaign: Campaign) -> bool:
    if user.is_admin and user.is_root:
        return True
    return not _hides_class(user, campaign.device_class) and _overlaps(user.area_path,
                                                                       campaign.area_path)


def get_campaign(session: Session, user: Principal, campaign_id: int, *,
                 lock: bool = False) -> Campaign:
    """``lock``: hold the campaign's row for this unit of work (an action that changes it must
    not interleave with a replica's timer step; PostgreSQL only, SQLite serialises writers)."""
    campaign = session.get(Campaign, campaign_id,
                           with_for_update={"of": Campaign} if lock else None)
    if campaign is None or not campaign_visible(user, campaign):
        raise NotFound(f"campaign {campaign_id} not found")
    return campaign


def list_campaigns(session: Session, user: Principal) -> list[Campaign]:
    rows = session.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(200))
    return [c for c in rows if campaign_visible(user, c)]


def _controllable(user: Principal, campaign: Campaign) -> None:
    """Technicians control only campaigns inside their own subtree (404 if they cannot see it,
    403 if they see it but it reaches beyond their area)."""
    if user.is_root:  # a city-wide admin or technician; a ward's admin is held to the ward
        return
    if campaign.area_path is None or not in_subtree(user.area_path, campaign.area_path):
        raise Forbidden(f"campaign {campaign.id} reaches beyond your area")


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    release_id: int
    area_id: int | None = None
    device_class: str | None = None
    tags: tuple[str, ...] = ()
    from_versions: tuple[str, ...] = ()
    waves: tuple[float, ...] | None = None
    failure_threshold: float | None = None


def _site_of(device: Device) -> int | None:
    return device.site_id if device.site_id is not None else device.gateway.site_id


def create_campaign(session: Session, settings: Settings, user: Principal, spec: CampaignSpec,
                    now: datetime | None = None) -> Campaign:
    now = now or utcnow()
    if not settings.ota.bundle_base_url:
        raise Conflict("ota.bundle_base_url is not configured: gateways would not know where "
                       "to download the release", code="ota-not-configured")
    release = get_release(session, user, spec.release_id)
    if spec.device_class is not None and spec.device_class != release.device_class:
        raise FleetError(f"release {release.id} is for class {release.device_class}, not "
                         f"{spec.device_class}", status=422, code="validation")
    area_path = user.area_path  # None: the whole tree
    if spec.area_id is not None:
        area_path = get_area(session, user, spec.area_id).path  # 404 outside the user's area
    query = visible_devices(select(Device), user).where(
        Device.device_class == release.device_class)
    if area_path is not None:
        from fleet.registry.models import Site

        sites = select(Site.id).join(Area, Site.area_id == Area.id).where(
            Area.path.startswith(area_path, autoescape=True))
        query = query.where(Device.site_id.in_(sites))
    # A device already in a live campaign is left to it (one update at a time per device).
    busy = select(CampaignDevice.device_id).join(
        Campaign, CampaignDevice.campaign_id == Campaign.id).where(
        Campaign.state.not_in(("completed", "cancelled")),
        CampaignDevice.state.not_in(W.FINAL))
    query = query.where(Device.id.not_in(busy))
    devices = [d for d in session.scalars(query.order_by(Device.id)).unique()
               if set(spec.tags) <= set(d.tags or [])
               and (not spec.from_versions or d.firmware in spec.from_versions)
               and d.firmware != release.version]
    if not devices:
        raise FleetError("no device matches the campaign's targeting (class "
                         f"{release.device_class}, not already on {release.version}, not in "
                         "another live campaign)",
                         status=422, code="no-devices")
    waves = check_waves(tuple(spec.waves)) if spec.waves else settings.ota.waves
    sizes = W.plan_waves(len(devices), waves)
    nonce = secrets.token_hex(16)
    threshold = settings.ota.failure_threshold if spec.failure_threshold is None \
        else spec.failure_threshold
    campaign = Campaign(
        name=spec.name, release_id=release.id, state="running", waves=list(waves),
        wave_count=len(sizes), current_wave=0, failure_threshold=threshold,
        target={"area_id": spec.area_id, "tags": list(spec.tags),
                "from_versions": list(spec.from_versions)},
        area_path=area_path, device_class=release.device_class, halt_reason="",
        token_nonce=nonce, token_hash=token_hash(settings, download_token(settings, nonce)),
        token_expires_at=now + timedelta(seconds=settings.ota.token_ttl_s),
        created_by=user.user_id or None, created_at=now, updated_at=now)
    session.add(campaign)
    session.flush()
    # Spread each wave over sites and gateways (a shuffle, not registry order, so the 1 % is
    # not one building's detectors).
    random.Random(campaign.id).shuffle(devices)
    wave_of = [i for i, size in enumerate(sizes) for _ in range(size)]
    session.add_all(CampaignDevice(campaign_id=campaign.id, device_id=d.id, wave=w,
                                   state="pending", offset=0, size=0, reason="",
                                   from_version=d.firmware, updated_at=now)
                    for d, w in zip(devices, wave_of, strict=True))
    session.flush()
    record(session, f"user:{user.username}", "campaign.created", "campaign", campaign.id,
           {"name": spec.name, "release_id": release.id, "version": release.version,
            "devices": len(devices), "waves": sizes, "threshold": threshold,
            "target": campaign.target})
    _advance(session, campaign, settings, now)
    return campaign


def pause(session: Session, user: Principal, campaign_id: int) -> Campaign:
    campaign = get_campaign(session, user, campaign_id, lock=True)
    _controllable(user, campaign)
    if campaign.state != "running":
        raise Conflict(f"campaign {campaign_id} is {campaign.state}, not running")
    _set_state(session, campaign, "paused", f"user:{user.username}", {})
    return campaign


def resume(session: Session, settings: Settings, user: Principal, campaign_id: int) -> Campaign:
    campaign = get_campaign(session, user, campaign_id, lock=True)
    _controllable(user, campaign)
    if campaign.state != "paused":
        raise Conflict(f"campaign {campaign_id} is {campaign.state}, not paused (a halted "
                       "campaign is cancelled, then a fixed release gets a new campaign)")
    _set_state(session, campaign, "running", f"user:{user.username}", {})
    _advance(session, campaign, settings, utcnow())
    return campaign


def cancel(session: Session, user: Principal, campaign_id: int) -> Campaign:
    """Stop the campaign: devices not yet offered are cancelled here, devices in flight are
    told to cancel (``op: cancel``) and report how it ended; the download token dies."""
    campaign = get_campaign(session, user, campaign_id, lock=True)
    _controllable(user, campaign)
    if campaign.state in ("completed", "cancelled"):
        raise Conflict(f"campaign {campaign_id} is already {campaign.state}")
    now = utcnow()
    members = list(session.scalars(select(CampaignDevice).where(
        CampaignDevice.campaign_id == campaign.id,
        CampaignDevice.state.not_in(W.FINAL))))
    # A start still waiting in the outbox never leaves it: that device was never offered.
    unsent = set(session.scalars(select(DeviceCommand.command_id).where(
        DeviceCommand.state == "pending", DeviceCommand.action == "ota",
        DeviceCommand.command_id.in_([m.command_id for m in members if m.command_id]))))
    if unsent:
        session.execute(update(DeviceCommand).where(DeviceCommand.command_id.in_(unsent))
                        .values(state="failed", error="campaign cancelled before it was sent")
                        .execution_options(synchronize_session=False))
    told = 0
    for member in members:
        if member.state == "pending" or member.command_id in unsent:
            member.state, member.reason = "cancelled", "campaign cancelled"
            member.updated_at = member.finished_at = now
        elif member.state in W.IN_FLIGHT and member.state not in ("committed", "trial"):
            _enqueue(session, campaign, member, "cancel", now, user.user_id or None)
            told += 1
    _set_state(session, campaign, "cancelled", f"user:{user.username}",
               {"told_to_cancel": told})
    return campaign


def _set_state(session: Session, campaign: Campaign, state: str, actor: str,
               detail: dict[str, Any], now: datetime | None = None) -> None:
    now = now or utcnow()
    before = campaign.state
    campaign.state, campaign.updated_at = state, now
    if state in ("completed", "cancelled"):
        campaign.ended_at = now
    record(session, actor, f"campaign.{state}", "campaign", campaign.id,
           {"from": before, **detail})
    log.info("campaign %d: %s -> %s", campaign.id, before, state)


# -- offering and the timer step --------------------------------------------------------------
def hazard_sites(session: Session) -> set[int]:
    """Sites with an active fire or flood alarm: a device's alarm while the device still
    reports the condition; a confirmed alarm of the site (``confirmed_fire``, raised by
    correlation, which no device clears: it stays ``active``) until a person resolves it."""
    rows = session.execute(
        select(Device.site_id, Gateway.site_id).join(Alarm, Alarm.device_id == Device.id)
        .join(Gateway, Device.gateway_id == Gateway.id)
        .where(Alarm.active.is_(True), Alarm.device_class.in_(HAZARD_CLASSES),
               or_(Alarm.type.not_in(CONFIRMED_TYPES), Alarm.state != "resolved"))).all()
    sites = {dev_site if dev_site is not None else gw_site for dev_site, gw_site in rows}
    return {site for site in sites if site is not None}


def _bundle_url(settings: Settings, release_id: int) -> str:
    return f"{settings.ota.bundle_base_url}/api/v1/releases/{release_id}/bundle"


def _enqueue(session: Session, campaign: Campaign, member: CampaignDevice, op: str,
             now: datetime, requested_by: int | None = None,
             settings: Settings | None = None) -> DeviceCommand:
    body: dict[str, Any] = {"v": 1, "op": op, "campaign": str(campaign.id)}
    if op == "start":
        assert settings is not None
        release = campaign.release
        body |= {"release": release.version, "url": _bundle_url(settings, release.id),
                 "sha256": release.sha256, "size": release.size}
    cmd = DeviceCommand(command_id=secrets.token_hex(8), device_id=member.device_id,
                        action="ota", body=body, state="pending", requested_by=requested_by,
                        requested_at=now, error="")
    session.add(cmd)
    member.command_id = cmd.command_id
    return cmd


def _members(session: Session, campaign_id: int) -> list[tuple[CampaignDevice, int | None]]:
    rows = session.execute(
        select(CampaignDevice, Device.site_id, Gateway.site_id)
        .join(Device, CampaignDevice.device_id == Device.id)
        .join(Gateway, Device.gateway_id == Gateway.id)
        .where(CampaignDevice.campaign_id == campaign_id).order_by(CampaignDevice.id)).all()
    return [(m, s if s is not None else g) for m, s, g in rows]


def _advance(session: Session, campaign: Campaign, settings: Settings, now: datetime,
             hazards: set[int] | None = None) -> W.Step:
    """Run one step of ``campaign`` (locked by the caller, or new) and apply it."""
    hazards = hazard_sites(session) if hazards is None else hazards
    rows = _members(session, campaign.id)
    members = [W.Member(m.id, m.wave, m.state, site in hazards, m.updated_at)
               for m, site in rows]
    plan = W.step(campaign.state, campaign.current_wave, campaign.wave_count, members,
                  campaign.failure_threshold, settings.ota.device_timeout_s, now)
    by_id = {m.id: m for m, _ in rows}
    for member_id in plan.timed_out:
        member = by_id[member_id]
        _finish(session, campaign, member, "failed", "timeout", SYSTEM, now)
        _enqueue(session, campaign, member, "cancel", now)
    offered = 0
    for member_id in plan.offer:
        claimed = session.execute(
            update(CampaignDevice).where(CampaignDevice.id == member_id,
                                         CampaignDevice.state == "pending")
            .values(state="sent", sent_at=now, updated_at=now)
            .execution_options(synchronize_session=False))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another replica offered it first
        member = by_id[member_id]
        session.refresh(member)
        _enqueue(session, campaign, member, "start", now, settings=settings)
        offered += 1
    if plan.wave != campaign.current_wave:
        record(session, SYSTEM, "campaign.wave", "campaign", campaign.id,
               {"wave": plan.wave + 1, "of": campaign.wave_count})
        campaign.current_wave, campaign.updated_at = plan.wave, now
    if offered:
        record(session, SYSTEM, "campaign.offered", "campaign", campaign.id,
               {"wave": plan.wave + 1, "devices": offered})
    if plan.state != campaign.state:
        if plan.state == "halted":
            campaign.halt_reason = plan.halt_reason
            log.warning("campaign %d halted: %s", campaign.id, plan.halt_reason)
        _set_state(session, campaign, plan.state, SYSTEM,
                   {"reason": plan.halt_reason} if plan.halt_reason else {}, now)
    return plan


def advance_due(session: Session, settings: Settings, now: datetime) -> int:
    """The timer: step every campaign that is running or still has devices in flight. Each
    campaign row is locked for the step (skipped when another replica holds it); returns how
    many campaigns were stepped."""
    in_flight = select(CampaignDevice.campaign_id).where(
        CampaignDevice.state.in_(W.IN_FLIGHT))
    query = select(Campaign).where(or_(Campaign.state == "running",
                                       and_(Campaign.state.in_(W.ACTIVE),
                                            Campaign.id.in_(in_flight)))).order_by(Campaign.id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Campaign)
    campaigns = list(session.scalars(query).unique())
    if not campaigns:
        return 0
    hazards = hazard_sites(session)
    for campaign in campaigns:
        _advance(session, campaign, settings, now, hazards)
    return len(campaigns)


# -- progress from the gateway ----------------------------------------------------------------
def _finish(session: Session, campaign: Campaign, member: CampaignDevice, state: str,
            reason: str, actor: str, now: datetime) -> None:
    member.state, member.reason = state, reason
    member.updated_at = member.finished_at = now
    record(session, actor, f"ota.{state}", "device", member.device_id,
           {"campaign": campaign.id, "release": campaign.release.version,
            **({"reason": reason} if reason else {})})


def apply_event(session: Session, gateway_key: str, event: OtaEvent) -> CampaignDevice | None:
    """An OtaEvent from ingest: the device's phase, progress and reason on its campaign row.
    Unknown campaigns or devices, another release, replays, events older than the last one
    applied (:func:`waves.event_applies`: per gateway epoch and seq) and anything after the
    device's part ended change nothing."""
    if not event.campaign.isdigit() or len(event.campaign) > 9:
        log.warning("OTA event from %s/%s names campaign %r, not one of ours", gateway_key,
                    event.device, event.campaign)
        return None
    row = session.execute(
        select(CampaignDevice, Campaign)
        .join(Campaign, CampaignDevice.campaign_id == Campaign.id)
        .join(Device, CampaignDevice.device_id == Device.id)
        .join(Gateway, Device.gateway_id == Gateway.id)
        .where(Campaign.id == int(event.campaign), Device.key == event.device,
               Gateway.key == gateway_key)).first()
    if row is None:
        log.warning("OTA event from %s/%s for campaign %s: the device is not in it",
                    gateway_key, event.device, event.campaign)
        return None
    member, campaign = row
    if event.release != campaign.release.version:
        log.warning("OTA event from %s/%s reports release %s, campaign %d ships %s",
                    gateway_key, event.device, event.release, campaign.id,
                    campaign.release.version)
        return None
    last = None if member.event_epoch is None else (
        member.event_epoch, member.event_seq or 0, member.event_ts)
    if not W.event_applies(member.state, last, (event.epoch, event.seq, event.ts), event.phase):
        log.debug("OTA event from %s/%s (campaign %s, %s, epoch %s seq %d) is older than the "
                 "device's %s: ignored", gateway_key, event.device, event.campaign, event.phase,
                 event.epoch, event.seq, member.state)
        return member
    now = utcnow()
    member.event_epoch, member.event_seq, member.event_ts = event.epoch, event.seq, event.ts
    if event.size:
        member.offset, member.size = event.offset, event.size
    if event.phase in W.FINAL:
        _finish(session, campaign, member, event.phase, _event_reason(event),
                actor_gateway(gateway_key), now)
    else:
        member.state, member.updated_at = event.phase, now
        member.reason = _event_reason(event)
    return member


#: A device's own refusal as the gateway names it (``refusal``: a contracts.release reason,
#: spaces as ``_``, or the bare code number for one the gateway does not know).
_REFUSAL = re.compile(r"[a-z0-9_]{1,40}")


def _event_reason(event: OtaEvent) -> str:
    """The reason an event leaves on the device's campaign row and in its audit entry. A
    refusal by the device itself keeps the device's own reason beside it
    (``device_refused: unknown_key``): that is what a technician has to act on, and the
    gateway sends it only as the event's ``refusal`` field."""
    refusal = (event.model_extra or {}).get("refusal")
    if event.reason == "device_refused" and isinstance(refusal, str) \
            and _REFUSAL.fullmatch(refusal):
        return f"{event.reason}: {refusal}"
    return event.reason


def apply_command_ack(session: Session, cmd: DeviceCommand) -> None:
    """A gateway that refused an OTA start (no OTA support, a bad body) fails the device."""
    if cmd.action != "ota" or cmd.state != "failed" or cmd.body.get("op") != "start":
        return
    row = session.execute(select(CampaignDevice, Campaign)
                          .join(Campaign, CampaignDevice.campaign_id == Campaign.id)
                          .where(CampaignDevice.command_id == cmd.command_id)).first()
    if row is None or row[0].state in W.FINAL:
        return
    member, campaign = row
    gateway = session.scalar(select(Gateway.key).join(Device, Device.gateway_id == Gateway.id)
                             .where(Device.id == cmd.device_id))
    _finish(session, campaign, member, "failed", f"gateway refused: {cmd.error}"[:200],
            actor_gateway(gateway or "?"), utcnow())


# -- views ------------------------------------------------------------------------------------
def member_rows(session: Session, user: Principal, campaign: Campaign
                ) -> list[tuple[CampaignDevice, Device, str | None]]:
    """The campaign's devices ``user`` may see, with each one's last command state."""
    base: Any = select(CampaignDevice, Device).join(
        Device, CampaignDevice.device_id == Device.id).where(
        CampaignDevice.campaign_id == campaign.id)
    query = visible_devices(base, user)
    rows = session.execute(query.order_by(CampaignDevice.wave, CampaignDevice.id)).unique().all()
    ids = [m.command_id for m, _ in rows if m.command_id]
    states = dict(session.execute(select(DeviceCommand.command_id, DeviceCommand.state)
                                  .where(DeviceCommand.command_id.in_(ids))).all()) if ids \
        else {}
    return [(m, d, states.get(m.command_id)) for m, d in rows]


def progress(session: Session, user: Principal, campaign: Campaign
             ) -> tuple[Counter[str], list[Counter[str]], int]:
    """Counts by state overall and per wave, over the devices ``user`` sees, and how many
    pending devices of the current wave are held by a hazard at their site."""
    rows = member_rows(session, user, campaign)
    total: Counter[str] = Counter()
    per_wave: list[Counter[str]] = [Counter() for _ in range(campaign.wave_count)]
    for member, _device, _cmd in rows:
        total[member.state] += 1
        per_wave[member.wave][member.state] += 1
    held = 0
    if campaign.state == "running":
        hazards = hazard_sites(session)
        held = sum(1 for m, d, _ in rows if m.state == "pending"
                   and m.wave == campaign.current_wave and _site_of(d) in hazards)
    return total, per_wave, held
