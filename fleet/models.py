"""Every domain's tables, imported in one place so ``Base.metadata`` is complete for Alembic,
``create_app`` and the tests. A new domain adds its models module here."""

from __future__ import annotations

from fleet.alarms import models as alarms
from fleet.audit import models as audit
from fleet.auth import models as auth
from fleet.control import models as control
from fleet.core.db import Base
from fleet.ingest import models as ingest
from fleet.notify import models as notify
from fleet.ota import models as ota
from fleet.registry import models as registry

__all__ = ["Base", "alarms", "audit", "auth", "control", "ingest", "notify", "ota", "registry"]
