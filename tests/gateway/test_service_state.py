"""The gateway's remembered state lives in its outbox: active alarm ids are stored in the same
transaction as the alarm edges, and a previous release's alarms.json is taken over once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.config import load_config
from gateway.decode import now
from gateway.service import Gateway


def _gateway(tmp_path: Path) -> Gateway:
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[gateway]
id = "gw-state"
storage = "{tmp_path / 'state'}"

[mqtt]
host = "127.0.0.1"
tls = false

[[bus]]
name = "riser"
type = "rtu"
port = "/dev/ttyUSB-absent"

[[bus.device]]
address = 1
class = "fire"
id = "fire-1"
""")
    async def build() -> Gateway:  # pymodbus wants a running loop to build its client
        return Gateway(load_config(str(config)))

    return asyncio.run(build())


def test_active_alarms_of_a_previous_release_are_taken_over_from_alarms_json(
        tmp_path: Path) -> None:
    legacy = tmp_path / "state" / "alarms.json"
    legacy.parent.mkdir()
    legacy.write_text(json.dumps({"fire-1": {"smoke": "fire-1:smoke:3:7"}}))
    gateway = _gateway(tmp_path)
    try:
        assert not legacy.exists()
        assert gateway.outbox.active_alarms() == {"fire-1": {"smoke": "fire-1:smoke:3:7"}}
        decoder = gateway.pollers["riser"].devices["fire-1"].decoder
        assert decoder.active == {"smoke": "fire-1:smoke:3:7"}
    finally:
        gateway.outbox.close()


def test_a_clear_is_remembered_in_the_same_transaction_as_its_message(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path)
    try:
        decoder = gateway.pollers["riser"].devices["fire-1"].decoder
        registers = [1, 1, 0, 1, 0, 0b1, 0, 10, 0b1, 0, 0, 0, 0, 0, 4, 9]  # smoke alarm bit set
        gateway.publish(decoder.update(registers + [0] * 16, now()))
        [(device, active)] = gateway.outbox.active_alarms().items()
        assert device == "fire-1" and list(active.values()) == list(decoder.active.values())
        registers[8] = 0  # the alarm clears
        gateway.publish(decoder.update(registers + [0] * 16, now()))
        assert gateway.outbox.active_alarms() == {}
        assert not (tmp_path / "state" / "alarms.json").exists()  # nothing beside the outbox
        assert [json.loads(m.payload)["state"] for m in gateway.outbox.peek(10)
                if m.kind == "alarm"] == ["raised", "cleared"]
    finally:
        gateway.outbox.close()


SMOKE = [1, 1, 0, 1, 0, 0b1, 0, 10, 0b1, 0, 0, 0, 0, 0, 4, 9] + [0] * 16  # smoke alarm bit set


def test_alarm_ids_held_in_memory_by_a_refusing_disk_are_stored_with_their_messages(
        tmp_path: Path) -> None:
    """The outbox cannot be opened at start (here: its path is taken by a directory, as a
    refusing disk would); the fire's raise is held in memory, and its alarm id reaches the
    outbox in the same write as the raise once the disk takes writes."""
    db = tmp_path / "state" / "outbox.db"
    db.mkdir(parents=True)
    gateway = _gateway(tmp_path)
    try:
        assert gateway.outbox is None
        decoder = gateway.pollers["riser"].devices["fire-1"].decoder
        gateway.publish(decoder.update(SMOKE, now()))
        assert [m.kind for m in gateway.store.held].count("alarm") == 1
        db.rmdir()
        gateway.store._retry_at = 0.0  # the store's next retry, now
        assert gateway.store.flush()
        assert gateway.outbox is not None
        assert gateway.outbox.active_alarms() == {"fire-1": decoder.active}
        assert [json.loads(m.payload)["alarm_id"] for m in gateway.outbox.peek(10)
                if m.kind == "alarm"] == list(decoder.active.values())
    finally:
        if gateway.outbox is not None:
            gateway.outbox.close()


def test_an_outbox_that_opens_late_gives_its_remembered_alarm_ids_back_to_the_devices(
        tmp_path: Path) -> None:
    """A fire alarm raised before a restart; at the restart the disk refuses the outbox for a
    while. Once it opens, the device adopts the remembered id, so the clear carries it."""
    first = _gateway(tmp_path)
    decoder = first.pollers["riser"].devices["fire-1"].decoder
    first.publish(decoder.update(SMOKE, now()))
    remembered = dict(decoder.active)
    assert first.outbox is not None
    first.outbox.close()
    db = tmp_path / "state" / "outbox.db"
    kept = tmp_path / "kept.db"
    db.rename(kept)
    db.mkdir()
    second = _gateway(tmp_path)
    try:
        assert second.outbox is None
        decoder = second.pollers["riser"].devices["fire-1"].decoder
        assert decoder.active == {}
        db.rmdir()
        kept.rename(db)
        second.store._retry_at = 0.0
        assert second.store.flush()
        assert decoder.active == remembered
        cleared = list(SMOKE)
        cleared[8] = 0
        second.publish(decoder.update(cleared, now()))
        assert second.outbox is not None
        assert [json.loads(m.payload)["alarm_id"] for m in second.outbox.peek(10)
                if m.kind == "alarm" and json.loads(m.payload)["state"] == "cleared"] == \
            list(remembered.values())
        assert second.outbox.active_alarms() == {}
    finally:
        if second.outbox is not None:
            second.outbox.close()


def test_an_unreadable_release_trust_file_turns_updates_off_not_the_gateway(
        tmp_path: Path) -> None:
    """Polling the detectors matters more than updating them: a missing trust file is logged
    and every ota command is refused with the reason, while the gateway runs."""
    from gateway.mqtt import Command

    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[gateway]
id = "gw-ota"
storage = "{tmp_path / 'state'}"

[mqtt]
host = "127.0.0.1"
tls = false

[ota]
trust = "{tmp_path / 'absent-trust.json'}"

[[bus]]
name = "riser"
type = "rtu"
port = "/dev/ttyUSB-absent"

[[bus.device]]
address = 1
class = "fire"
id = "fire-1"
""")

    async def command() -> str:
        gateway = Gateway(load_config(str(config)))
        assert gateway.ota is None
        try:
            await gateway._command(Command("c-1", "fire-1", "ota", {}, "t"))
        except ValueError as exc:
            return str(exc)
        return "accepted"

    error = asyncio.run(command())
    assert "firmware updates are off" in error and "absent-trust.json" in error
