"""The gateway TOML the end-to-end tests run with, written once: one RTU bus of simulated
nodes, a plain-TCP Mosquitto, and whatever a test adds (poll settings, rules, gateway keys)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.gateway.mosquitto import Broker


@dataclass(frozen=True)
class Node:
    """One ``[[bus.device]]``: the node's address and class, its id at the fleet."""

    address: int
    cls: str
    id: str
    located: bool = True  # location = "room <address>"
    poll: str = ""  # the inside of the poll table, e.g. "telemetry_ms = 150"

    def toml(self) -> str:
        text = (f'[[bus.device]]\naddress = {self.address}\nclass = "{self.cls}"\n'
                f'id = "{self.id}"\n')
        if self.located:
            text += f'location = "room {self.address}"\n'
        if self.poll:
            text += f"poll = {{ {self.poll} }}\n"
        return text


def fire_rule(name: str, device: str) -> str:
    """A fire anywhere on the site switches coil 0 of ``device`` on, until released by hand."""
    return f"""
[[rule]]
name = "{name}"
when = {{ class = "fire", site_any = true, alarm = "any" }}
then = {{ device = "{device}", coil = 0, value = true }}
release = "manual"
"""


def gateway_toml(gateway_id: str, broker: Broker, storage: Path, port: str,
                 nodes: Iterable[Node], *, gateway_extra: str = "", timeout_s: float = 0.3,
                 extra: str = "") -> str:
    """``[gateway]`` (id, storage, ``gateway_extra``), ``[mqtt]`` on ``broker``, one RTU bus
    "riser" on ``port`` with ``nodes``, then ``extra`` (rules, more tables)."""
    devices = "\n".join(node.toml() for node in nodes)
    return f"""
[gateway]
id = "{gateway_id}"
{gateway_extra}
storage = "{storage}"

[mqtt]
host = "{broker.host}"
port = {broker.port}
tls = false

[[bus]]
name = "riser"
type = "rtu"
port = "{port}"
timeout_s = {timeout_s}

{devices}
{extra}
"""
