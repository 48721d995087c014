"""The escalation timer: every few seconds, escalate overdue unacknowledged alarms.

Every replica runs one; they coordinate through the database (see
:func:`fleet.alarms.service.escalate_due`), so each escalation fires once however many run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fleet.alarms.service import EscalationFired, escalate_due
from fleet.core.db import Database, utcnow
from fleet.core.settings import Settings

__all__ = ["run_escalation_timer", "tick"]

log = logging.getLogger(__name__)


def tick(db: Database, settings: Settings) -> list[EscalationFired]:
    with db.transaction() as session:
        return escalate_due(session, settings.escalation, utcnow())


async def run_escalation_timer(db: Database, settings: Settings,
                               on_fired: Callable[[], None] | None = None) -> None:
    log.info("escalation timer every %.1f s", settings.escalation_poll_s)
    while True:
        try:
            fired = await asyncio.to_thread(tick, db, settings)
            if fired and on_fired is not None:
                on_fired()
        except Exception:
            log.exception("escalation tick failed; retrying next period")
        await asyncio.sleep(settings.escalation_poll_s)
