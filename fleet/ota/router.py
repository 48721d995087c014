"""HTTP for releases and campaigns. Thin: it parses, checks the role, and calls the service.

The bundle download takes either a campaign's download token (what gateways hold) or the
session/API token of a user who may manage releases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from fleet.auth.rbac import Permission, Principal, allowed
from fleet.auth.service import principal_for_token
from fleet.core.deps import SessionDep, SettingsDep, require
from fleet.core.errors import FleetError, Forbidden, Unauthorized, problem_responses
from fleet.core.types import IdPath
from fleet.ota import service
from fleet.ota.models import Campaign, Release
from fleet.ota.schemas import (
    CampaignCreate,
    CampaignDeviceOut,
    CampaignOut,
    HaltOut,
    ReleaseOut,
    WaveOut,
)
from fleet.ota.waves import IN_FLIGHT, Halt

router = APIRouter(tags=["ota"])
Reader = Annotated[Principal, Depends(require(Permission.READ))]
Operator = Annotated[Principal, Depends(require(Permission.MANAGE_OTA))]
_bearer = HTTPBearer(auto_error=False, description="a campaign download token, or the token "
                                                   "of a user who may manage releases")
TAR = "application/x-tar"


@router.post("/releases", response_model=ReleaseOut, status_code=status.HTTP_201_CREATED,
             responses=problem_responses(413),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string",
                                                         "format": "binary"}}}}})
async def upload_release(request: Request, user: Operator, session: SessionDep,
                         settings: SettingsDep) -> Release:
    """Upload a release bundle: the raw bytes of an uncompressed tar of a signed release
    directory (any content type; ``application/octet-stream`` or ``application/x-tar``). Refused
    with problem+json ``release-refused`` and a ``reason`` (unsigned, malformed, bad_signature,
    unknown_key, revoked_key, downgrade, bad_hash, bad_size) unless it verifies against the
    fleet's release trust."""
    limit = settings.ota.release_max_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FleetError(f"bundle is above ota.release_max_bytes ({limit})", status=413,
                             code="release-too-large")
    # Verifying hashes every file and checks a signature: CPU work in a worker thread, so the
    # event loop (every other request, the ingest's health) never waits for an upload.
    return await run_in_threadpool(service.upload_release, session, settings, user, bytes(body))


@router.get("/releases", response_model=list[ReleaseOut])
def list_releases(user: Reader, session: SessionDep) -> list[Release]:
    return service.list_releases(session, user)


@router.get("/releases/{release_id}", response_model=ReleaseOut)
def get_release(release_id: IdPath, user: Reader, session: SessionDep) -> Release:
    return service.get_release(session, user, release_id)


@router.get("/releases/{release_id}/bundle", response_class=Response,
            responses={200: {"content": {TAR: {"schema": {"type": "string",
                                                          "format": "binary"}}}}})
def download_bundle(
    release_id: IdPath, session: SessionDep, settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Response:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("a bearer token is required")
    token = credentials.credentials
    if service.is_download_token(token):
        release, data = service.bundle_for_token(session, settings, release_id, token)
    else:
        user = principal_for_token(session, token, settings)
        if user is None:
            raise Unauthorized("the token is unknown, expired or revoked")
        if user.must_change_password or not allowed(user.role, Permission.MANAGE_OTA):
            raise Forbidden(f"role {user.role!r} may not download release bundles")
        release = service.get_release(session, user, release_id)
        data = service.bundle_bytes(session, release_id)
    return Response(data, media_type=TAR, headers={
        "Content-Disposition": f'attachment; filename="{release.device_class}-'
                               f'{release.board}-{release.version}.tar"',
        "X-Content-SHA256": release.sha256})


def campaign_out(session: SessionDep, user: Principal, campaign: Campaign) -> CampaignOut:
    total, per_wave, held = service.progress(session, user, campaign)
    waves = [WaveOut(wave=i + 1, devices=sum(c.values()), pending=c["pending"],
                     in_flight=sum(c[s] for s in IN_FLIGHT), confirmed=c["confirmed"],
                     failed=c["failed"], cancelled=c["cancelled"])
             for i, c in enumerate(per_wave)]
    halt = Halt.parse(campaign.halt_reason)
    return CampaignOut(
        halt=HaltOut(code=halt.code, wave=halt.wave, failed=halt.failed, finished=halt.finished,
                     threshold=campaign.failure_threshold) if halt else None,
        id=campaign.id, name=campaign.name, release_id=campaign.release_id,
        version=campaign.release.version, device_class=campaign.device_class,
        state=campaign.state, current_wave=campaign.current_wave + 1,
        wave_count=campaign.wave_count, waves=campaign.waves,
        failure_threshold=campaign.failure_threshold, target=campaign.target,
        halt_reason=campaign.halt_reason, devices=sum(total.values()), by_state=dict(total),
        wave_progress=waves, held_by_hazard=held, created_at=campaign.created_at,
        updated_at=campaign.updated_at, ended_at=campaign.ended_at)


@router.post("/campaigns", response_model=CampaignOut, status_code=status.HTTP_201_CREATED)
def create_campaign(body: CampaignCreate, user: Operator, session: SessionDep,
                    settings: SettingsDep) -> CampaignOut:
    """Target devices, plan the waves and offer the first wave at once."""
    spec = service.CampaignSpec(
        name=body.name, release_id=body.release_id, area_id=body.area_id,
        device_class=body.device_class, tags=tuple(body.tags),
        from_versions=tuple(body.from_versions),
        waves=tuple(body.waves) if body.waves else None,
        failure_threshold=body.failure_threshold)
    return campaign_out(session, user, service.create_campaign(session, settings, user, spec))


@router.get("/campaigns", response_model=list[CampaignOut])
def list_campaigns(user: Reader, session: SessionDep) -> list[CampaignOut]:
    return [campaign_out(session, user, c) for c in service.list_campaigns(session, user)]


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut)
def get_campaign(campaign_id: IdPath, user: Reader, session: SessionDep) -> CampaignOut:
    return campaign_out(session, user, service.get_campaign(session, user, campaign_id))


@router.get("/campaigns/{campaign_id}/devices", response_model=list[CampaignDeviceOut])
def campaign_devices(campaign_id: IdPath, user: Reader,
                     session: SessionDep) -> list[CampaignDeviceOut]:
    campaign = service.get_campaign(session, user, campaign_id)
    return [CampaignDeviceOut(
        device_id=d.id, device=d.key, gateway=d.gateway.key,
        site_id=d.site_id if d.site_id is not None else d.gateway.site_id, wave=m.wave + 1,
        state=m.state, offset=m.offset, size=m.size, reason=m.reason,
        from_version=m.from_version, firmware=d.firmware, command_id=m.command_id,
        command_state=cmd_state, sent_at=m.sent_at, updated_at=m.updated_at,
        finished_at=m.finished_at) for m, d, cmd_state in service.member_rows(session, user,
                                                                               campaign)]


@router.post("/campaigns/{campaign_id}/pause", response_model=CampaignOut)
def pause(campaign_id: IdPath, user: Operator, session: SessionDep) -> CampaignOut:
    """No new offers; transfers already running finish."""
    return campaign_out(session, user, service.pause(session, user, campaign_id))


@router.post("/campaigns/{campaign_id}/resume", response_model=CampaignOut)
def resume(campaign_id: IdPath, user: Operator, session: SessionDep,
           settings: SettingsDep) -> CampaignOut:
    return campaign_out(session, user, service.resume(session, settings, user, campaign_id))


@router.post("/campaigns/{campaign_id}/cancel", response_model=CampaignOut)
def cancel(campaign_id: IdPath, user: Operator, session: SessionDep) -> CampaignOut:
    """Stop: devices not yet offered are cancelled, devices in flight get ``op: cancel``."""
    return campaign_out(session, user, service.cancel(session, user, campaign_id))
