"""`edgefleet gateway outbox {stats,dead,retry} CONFIG`: what a technician at the Pi sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.outbox import Message, Outbox


def _edgefleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefleet.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_a_technician_sees_the_dead_letters_and_requeues_them(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[gateway]
id = "gw-tech"
storage = "{tmp_path / 'state'}"

[mqtt]
host = "127.0.0.1"
tls = false
""")
    (tmp_path / "state").mkdir()
    with Outbox(tmp_path / "state" / "outbox.db") as outbox:
        stored = outbox.put_many([Message(f"edgefleet/v1/gw-tech/fire-{i}/alarm",
                                          {"v": 1, "n": i}, "alarm", device=f"fire-{i}")
                                  for i in range(3)])
        outbox.dead_letter(stored[0].id, "Not authorized", 0x87)
        outbox.dead_letter(stored[1].id, "Payload format invalid", 0x99)
        epoch = outbox.epoch

    stats = _edgefleet("gateway", "outbox", "stats", str(config))
    assert stats.returncode == 0, stats.stderr
    assert epoch in stats.stdout and "waiting     1 message(s)" in stats.stdout
    assert "2 held" in stats.stdout

    dead = _edgefleet("gateway", "outbox", "dead", str(config))
    assert "0x87  Not authorized  edgefleet/v1/gw-tech/fire-0/alarm" in dead.stdout
    assert "0x99" in dead.stdout

    retry = _edgefleet("gateway", "outbox", "retry", "--id", str(stored[1].id), str(config))
    assert retry.returncode == 0 and "re-queued 1 dead letter(s); 2 message(s)" in retry.stdout
    with Outbox(tmp_path / "state" / "outbox.db") as outbox:
        assert [m.seq for m in outbox.peek(10)] == [1, 1]  # fire-2's, then fire-1's again
        assert [d.code for d in outbox.dead_letters()] == [0x87]


def test_outbox_commands_say_when_there_is_no_outbox(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nid = "gw"\nstorage = "{tmp_path}"\n\n'
                      '[mqtt]\nhost = "127.0.0.1"\ntls = false\n')
    result = _edgefleet("gateway", "outbox", "stats", str(config))
    assert result.returncode == 1 and "no outbox at" in result.stderr
