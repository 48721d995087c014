"""The campaign timer: every ``ota.poll_s``, step every live campaign (next wave, halt, device
timeouts, offers held by a hazard that has cleared).

Every replica runs one; they coordinate through the database (see
:func:`fleet.ota.service.advance_due`), so each offer, halt and timeout happens once."""

from __future__ import annotations

import asyncio
import logging

from fleet.core.db import Database, utcnow
from fleet.core.settings import Settings
from fleet.ota.service import advance_due

__all__ = ["run_campaign_timer", "tick"]

log = logging.getLogger(__name__)


def tick(db: Database, settings: Settings) -> int:
    with db.transaction() as session:
        return advance_due(session, settings, utcnow())


async def run_campaign_timer(db: Database, settings: Settings) -> None:
    log.info("campaign timer every %.1f s", settings.ota.poll_s)
    while True:
        try:
            await asyncio.to_thread(tick, db, settings)
        except Exception:
            log.exception("campaign tick failed; retrying next period")
        await asyncio.sleep(settings.ota.poll_s)
