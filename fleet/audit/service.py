"""Writing and reading the audit log. Every service that changes state calls :func:`record`
inside its own transaction, so the change and its audit row commit or roll back together."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.audit.models import AuditEntry

__all__ = ["SYSTEM", "actor_gateway", "list_entries", "record"]

SYSTEM = "system"


def actor_gateway(gateway_key: str) -> str:
    return f"gateway:{gateway_key}"


def record(session: Session, actor: str, action: str, entity_type: str, entity_id: object,
           detail: dict[str, Any] | None = None, at: datetime | None = None) -> AuditEntry:
    entry = AuditEntry(actor=actor, action=action, entity_type=entity_type,
                       entity_id=str(entity_id), detail=detail or {})
    if at is not None:
        entry.at = at
    session.add(entry)
    return entry


def list_entries(session: Session, *, entity_type: str | None = None,
                 entity_id: str | None = None, action: str | None = None,
                 after_id: int = 0, limit: int = 100) -> list[AuditEntry]:
    query = select(AuditEntry).where(AuditEntry.id > after_id)
    if entity_type:
        query = query.where(AuditEntry.entity_type == entity_type)
    if entity_id:
        query = query.where(AuditEntry.entity_id == entity_id)
    if action:
        query = query.where(AuditEntry.action == action)
    return list(session.scalars(query.order_by(AuditEntry.id).limit(limit)))
