"""HTTP for the audit log: read-only, admins only, paged by id (``after``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from fleet.audit import service
from fleet.audit.models import AuditEntry
from fleet.audit.schemas import AuditOut
from fleet.auth.rbac import Permission, Principal
from fleet.core.deps import SessionDep, require
from fleet.core.types import QueryText

router = APIRouter(prefix="/audit", tags=["audit"])
Auditor = Annotated[Principal, Depends(require(Permission.READ_AUDIT))]


@router.get("", response_model=list[AuditOut])
def list_audit(_: Auditor, session: SessionDep, entity_type: QueryText = None,
               entity_id: QueryText = None, action: QueryText = None,
               after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditEntry]:
    return service.list_entries(session, entity_type=entity_type, entity_id=entity_id,
                                action=action, after_id=after, limit=limit)
