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
