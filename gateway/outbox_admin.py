"""A technician's view of a gateway's outbox: ``edgefleet gateway outbox {stats,dead,retry}``.

It opens the outbox database named by the gateway's config (``[gateway] storage``) and turns
what is there into plain text lines; the CLI (edgefleet/cli.py) only prints them. ``retry``
moves dead letters back into the queue (they keep their epoch and seq). It is safe while the
service runs (SQLite serialises the two writers; the service sends the re-queued messages on its
next read of the queue), but the service's own depth counter only catches up at its next
start, so prefer stopping the service first.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import load_config
from gateway.outbox import Outbox

__all__ = ["dead", "open_outbox", "retry", "stats"]


def open_outbox(config_path: str) -> Outbox:
    config = load_config(config_path)
    path = Path(config.gateway.storage) / "outbox.db"
    if not path.exists():
        raise FileNotFoundError(f"no outbox at {path} (has the gateway run with this config?)")
    return Outbox(path, max_bytes=int(config.gateway.max_outbox_mb * 1024 * 1024), check=False)


def stats(config_path: str) -> list[str]:
    with open_outbox(config_path) as outbox:
        s = outbox.stats()
        lines = [
            f"outbox      {outbox.path}",
            f"epoch       {s.epoch}",
            f"waiting     {s.depth} message(s), {s.bytes} of {s.max_bytes} bytes, oldest "
            f"{s.oldest_age_s:.0f} s",
            f"dropped     {s.dropped_telemetry} telemetry message(s) by the disk bound",
            f"dead        {s.dead_letters} refused by the broker in all; {s.dead_letters_held} "
            f"held (at most {outbox.max_dead_letters}), {s.dead_letters_discarded} discarded",
        ]
        lines += [f"  dropped   {device}: {count}" for device, count in
                  s.dropped_by_device.items()]
        active = outbox.active_alarms()
        lines += [f"  alarm     {device}: {alarm_id}" for device, ids in active.items()
                  for alarm_id in ids.values()]
        return lines


def dead(config_path: str, limit: int = 50) -> list[str]:
    with open_outbox(config_path) as outbox:
        letters = outbox.dead_letters(limit)
        if not letters:
            return ["no dead letters"]
        lines = []
        for d in letters:
            when = datetime.fromtimestamp(d.failed_at, UTC).isoformat(timespec="seconds")
            code = "-" if d.code is None else f"{d.code:#04x}"
            lines.append(f"{d.id:>8}  {when}  {code}  {d.reason}  {d.topic}  "
                         f"device={d.device} seq={d.seq}")
            lines.append(f"          {json.loads(d.payload)}")
        return lines


def retry(config_path: str, ids: list[int] | None = None) -> list[str]:
    with open_outbox(config_path) as outbox:
        moved = outbox.requeue_dead(ids or None)
        return [f"re-queued {moved} dead letter(s); {outbox.stats().depth} message(s) waiting"]
