"""HTTP for alarms: list, one alarm, its history, acknowledge and resolve (with a comment)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from fleet.alarms import lifecycle, service
from fleet.alarms.models import Alarm
from fleet.alarms.schemas import AlarmAction, AlarmOut, HistoryEntry
from fleet.audit.models import AuditEntry
from fleet.auth.rbac import Permission, Principal
from fleet.core.deps import SessionDep, SettingsDep, require
from fleet.core.settings import Settings
from fleet.core.types import NO_NUL, IdPath, IdQuery, Offset

router = APIRouter(prefix="/alarms", tags=["alarms"])
Reader = Annotated[Principal, Depends(require(Permission.READ))]
Responder = Annotated[Principal, Depends(require(Permission.ACK_ALARMS))]


def alarm_out(alarm: Alarm, settings: Settings) -> AlarmOut:
    out = AlarmOut.model_validate(alarm)
    steps = service.policy_for(settings.escalation, alarm.device_class)
    out.next_escalation_at = lifecycle.next_deadline(alarm.state, alarm.escalation_level,
                                                     alarm.raised_at, steps)
    return out


@router.get("", response_model=list[AlarmOut])
def list_alarms(user: Reader, session: SessionDep, settings: SettingsDep,
                state: Literal["raised", "acknowledged", "resolved"] | None = None,
                open_only: bool = False, active: bool | None = None,
                device_class: Annotated[str | None, Query(alias="class", pattern=NO_NUL)] = None,
                device_id: IdQuery = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Offset = 0) -> list[AlarmOut]:
    flt = service.AlarmFilter(state=state, active=active, device_class=device_class,
                              device_id=device_id, open_only=open_only)
    return [alarm_out(a, settings)
            for a in service.list_alarms(session, user, flt, limit=limit, offset=offset)]


@router.get("/{alarm_id}", response_model=AlarmOut)
def get_alarm(alarm_id: IdPath, user: Reader, session: SessionDep,
              settings: SettingsDep) -> AlarmOut:
    return alarm_out(service.get_alarm(session, user, alarm_id), settings)


@router.get("/{alarm_id}/history", response_model=list[HistoryEntry])
def alarm_history(alarm_id: IdPath, user: Reader, session: SessionDep) -> list[AuditEntry]:
    return service.alarm_history(session, user, alarm_id)


@router.post("/{alarm_id}/acknowledge", response_model=AlarmOut)
def acknowledge(alarm_id: IdPath, body: AlarmAction, user: Responder, session: SessionDep,
                settings: SettingsDep) -> AlarmOut:
    return alarm_out(service.acknowledge(session, user, alarm_id, body.comment), settings)


@router.post("/{alarm_id}/resolve", response_model=AlarmOut)
def resolve(alarm_id: IdPath, body: AlarmAction, user: Responder, session: SessionDep,
            settings: SettingsDep) -> AlarmOut:
    return alarm_out(service.resolve(session, user, alarm_id, body.comment), settings)
