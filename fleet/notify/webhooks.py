"""Webhooks: enqueue in the alarm's own transaction, deliver from any replica, retry until 2xx.

- :func:`enqueue` is called by the alarm service for each alarm audit row; it writes one
  delivery per matching active subscription (unique per subscription and event).
- :func:`deliver_due` claims due rows with a lease (``UPDATE ... WHERE claimed_until is free``,
  per row, so two replicas never both send one), POSTs them signed, and records the outcome.
  A 2xx marks the row delivered and it is never sent again; anything else (refused, timeout,
  5xx) schedules a retry with capped, jittered back-off. The receiver can de-duplicate by the
  ``X-Edgefleet-Event`` id if a 2xx is lost on the way back (at-least-once delivery).
- A subscription's HMAC secret is stored sealed (:mod:`fleet.notify.sealed`), shown once when
  the subscription is created, opened only to sign, and never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fleet.audit.models import AuditEntry
from fleet.audit.service import record
from fleet.core.db import Database, utcnow
from fleet.core.errors import NotFound
from fleet.notify.models import WebhookDelivery, WebhookSubscription
from fleet.notify.sealed import SealError, SecretBox
from fleet.notify.signing import SIGNATURE_HEADER, backoff_s, sign

__all__ = ["create_subscription", "deliver_due", "enqueue", "run_webhook_worker"]

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=30)
TIMEOUT_S = 5.0


def create_subscription(session: Session, box: SecretBox, *, name: str, url: str,
                        classes: list[str], secret: str | None,
                        actor: str) -> tuple[WebhookSubscription, str]:
    """Subscribe ``url``; returns the row and the plain secret, for the caller to show once."""
    secret = secret or secrets.token_urlsafe(32)
    sub = WebhookSubscription(name=name, url=url, secret_sealed=box.seal(secret),
                              classes=sorted(set(classes)), active=True)
    session.add(sub)
    session.flush()
    record(session, actor, "webhook.created", "webhook", sub.id, {"name": name, "url": url,
                                                                   "classes": sub.classes})
    return sub, secret


def delete_subscription(session: Session, sub_id: int, actor: str) -> None:
    sub = session.get(WebhookSubscription, sub_id)
    if sub is None:
        raise NotFound(f"webhook {sub_id} not found")
    sub.active = False
    record(session, actor, "webhook.disabled", "webhook", sub.id)


def enqueue(session: Session, entry: AuditEntry, device_class: str,
            payload: dict[str, Any]) -> int:
    """Queue ``payload`` (an alarm event) for every active subscription wanting
    ``device_class``; returns how many deliveries were queued. Idempotent per event."""
    queued = 0
    for sub in session.scalars(select(WebhookSubscription).where(
            WebhookSubscription.active.is_(True))):
        if sub.classes and device_class not in sub.classes:
            continue
        try:
            with session.begin_nested():
                session.add(WebhookDelivery(subscription_id=sub.id, event_id=entry.id,
                                            payload=payload, attempts=0,
                                            next_attempt_at=utcnow(), last_error=""))
                session.flush()
            queued += 1
        except IntegrityError:
            pass  # already queued (a replay of the same event)
    return queued


def _claim(db: Database, now: datetime, limit: int) -> list[tuple[int, str, str, int, str]]:
    """Lease up to ``limit`` due deliveries; each row is claimed by a conditional UPDATE, so
    of two replicas racing for one row exactly one gets it."""
    claimed = []
    with db.transaction() as session:
        due = session.execute(
            select(WebhookDelivery.id).where(
                WebhookDelivery.delivered_at.is_(None), WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.claimed_until.is_(None),
                    WebhookDelivery.claimed_until < now))
            .order_by(WebhookDelivery.id).limit(limit)).scalars().all()
        for delivery_id in due:
            result = session.execute(
                update(WebhookDelivery).where(
                    WebhookDelivery.id == delivery_id, WebhookDelivery.delivered_at.is_(None),
                    or_(WebhookDelivery.claimed_until.is_(None),
                        WebhookDelivery.claimed_until < now))
                .values(claimed_until=now + LEASE)
                .execution_options(synchronize_session=False))
            if result.rowcount == 1:  # type: ignore[attr-defined]
                row = session.execute(
                    select(WebhookDelivery.id, WebhookSubscription.url,
                           WebhookSubscription.secret_sealed, WebhookDelivery.event_id,
                           WebhookDelivery.payload)
                    .join(WebhookSubscription,
                          WebhookSubscription.id == WebhookDelivery.subscription_id)
                    .where(WebhookDelivery.id == delivery_id)).one()
                claimed.append((row[0], row[1], row[2], row[3],
                                json.dumps(row[4], separators=(",", ":"), ensure_ascii=False)))
    return claimed


def deliver_due(db: Database, box: SecretBox, now: datetime | None = None, limit: int = 50,
                client: httpx.Client | None = None) -> tuple[int, int]:
    """One worker pass: send what is due. Returns (delivered, failed)."""
    now = now or utcnow()
    own = client is None
    http = client or httpx.Client(timeout=TIMEOUT_S)
    delivered = failed = 0
    try:
        for delivery_id, url, sealed, event_id, body in _claim(db, now, limit):
            data = body.encode()
            error = ""
            try:
                signature = sign(box.open(sealed), int(now.timestamp()), data)
            except SealError as exc:
                error = str(exc)  # nothing sent unsigned; retried (and shown) like any failure
            if not error:
                headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature,
                           "X-Edgefleet-Event": str(event_id),
                           "X-Edgefleet-Delivery": str(delivery_id)}
                try:
                    response = http.post(url, content=data, headers=headers)
                    if not 200 <= response.status_code < 300:
                        error = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:500]
            with db.transaction() as session:
                row = session.get(WebhookDelivery, delivery_id)
                assert row is not None
                row.attempts += 1
                row.claimed_until = None
                if error:
                    row.last_error = error
                    row.next_attempt_at = now + timedelta(seconds=backoff_s(row.attempts))
                    failed += 1
                    log.warning("webhook delivery %d (event %d) to %s failed (attempt %d): %s",
                                delivery_id, event_id, url, row.attempts, error)
                else:
                    row.delivered_at, row.last_error = utcnow(), ""
                    delivered += 1
    finally:
        if own:
            http.close()
    return delivered, failed


async def run_webhook_worker(db: Database, box: SecretBox, period_s: float,
                             now: Callable[[], datetime] = utcnow) -> None:
    log.info("webhook worker every %.1f s", period_s)
    while True:
        try:
            await asyncio.to_thread(deliver_due, db, box, now())
        except Exception:
            log.exception("webhook pass failed; retrying next period")
        await asyncio.sleep(period_s)
