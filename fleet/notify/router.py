"""HTTP for live push: ``GET /notify/alarms`` streams alarm changes the user may see as
server-sent events (``text/event-stream``; ``event: alarm``, and ``event: command`` when a device
command is requested or answered by its gateway), resumable with ``Last-Event-ID``. A stream opened
without one first names the audit id it starts from (``id:`` with no event), so a browser that
saw no alarm before the stream dropped still resumes from where it began. An escalation to the
user's role also comes as an ``escalation`` event. ``/notify/inbox`` lists the user's own
notifications (escalations addressed to them), kept until read.

A browser's EventSource cannot send an Authorization header, so this one endpoint also takes
the token as ``?access_token=``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select

from fleet.audit.models import AuditEntry
from fleet.auth.rbac import Permission, Principal, allowed, can_see
from fleet.auth.service import principal_for_token
from fleet.core.deps import DatabaseDep, SessionDep, SettingsDep, require
from fleet.core.errors import Forbidden, Unauthorized
from fleet.core.types import IdPath
from fleet.notify import inbox
from fleet.notify.feed import AlarmEvent, AlarmFeed, alarm_events_after
from fleet.notify.models import UserNotification
from fleet.notify.schemas import NotificationOut

router = APIRouter(prefix="/notify", tags=["notify"])
KEEPALIVE_S = 15.0
Reader = Annotated[Principal, Depends(require(Permission.READ))]


def _frame(event: AlarmEvent, user: Principal) -> bytes:
    """The event every viewer gets (``alarm``, or ``command``), preceded, for a user the change
    is addressed to (an escalation to their role), by an ``escalation`` event: a client raises
    its loud alert on that one. It carries no id, so resuming still goes by the events' ids."""
    body = json.dumps(event.data, separators=(',', ':'))
    frame = f"id: {event.id}\nevent: {event.kind}\ndata: {body}\n\n"
    if event.addressed_to(user):
        personal = json.dumps({**event.data, "escalation": event.escalation},
                              separators=(",", ":"))
        frame = f"event: escalation\ndata: {personal}\n\n" + frame
    return frame.encode()


@router.get("/alarms", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "server-sent events, one per alarm change"}})
async def alarm_stream(
    request: Request, db: DatabaseDep, settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    access_token: Annotated[str | None, Query()] = None,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    token = access_token
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:]
    if not token:
        raise Unauthorized("a bearer token is required")

    def auth() -> tuple[Principal | None, list[AlarmEvent], int]:
        with db.reading() as session:
            user = principal_for_token(session, token, settings)
            if user is None:
                return None, [], 0
            if last_event_id is not None:
                return user, alarm_events_after(session, last_event_id), last_event_id
            return user, [], int(session.scalar(select(func.max(AuditEntry.id))) or 0)

    user, backlog, start = await asyncio.to_thread(auth)
    if user is None:
        raise Unauthorized("the token is unknown, expired or revoked")
    if user.must_change_password or not allowed(user.role, Permission.READ):
        raise Forbidden("this account may not read alarms")
    feed: AlarmFeed = request.app.state.alarm_feed
    sub = feed.subscribe(user)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b": connected\n\n"
            if last_event_id is None:
                # Where this stream starts, as an id with no event: the browser keeps it as its
                # Last-Event-ID, so a drop before the first alarm still resumes from here (a
                # fleet restart with a quiet board would otherwise lose what happened meanwhile).
                yield f"id: {start}\n\n".encode()
            sent = 0
            for old in backlog:
                if can_see(user, old.area_path, old.device_class):
                    sent = old.id
                    yield _frame(old, user)
            while not sub.closed:
                try:
                    event = await asyncio.wait_for(sub.next(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if event is None:
                    return
                if event.id <= sent and last_event_id is not None:
                    continue  # already replayed from the backlog
                yield _frame(event, user)
        finally:
            feed.unsubscribe(sub)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/inbox", response_model=list[NotificationOut])
def inbox_list(user: Reader, session: SessionDep, unread: bool = False,
               limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[UserNotification]:
    """Escalations addressed to the caller, newest first (``unread=true``: not yet read)."""
    return inbox.list_inbox(session, user, unread_only=unread, limit=limit)


@router.post("/inbox/{notification_id}/read", status_code=status.HTTP_204_NO_CONTENT)
def inbox_read(notification_id: IdPath, user: Reader, session: SessionDep) -> None:
    inbox.mark_read(session, user, notification_id)
