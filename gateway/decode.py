"""Register blocks in, MQTT messages out: the pure core between the poller and the outbox.

One :class:`DeviceDecoder` per configured device remembers what it last told the world (alarms
active with their ids, the retained state) so it only emits edges and changes. It does no I/O;
the caller persists :meth:`DeviceDecoder.snapshot` (active alarm ids) so ids survive restarts.

alarm_id = ``<device>:<type>:<boot>:<alarm_seq>``: the node's boot counter and its alarm
sequence register at the raise edge. It names one occurrence of one alarm, the same in its
``raised`` and ``cleared`` messages, and never repeats for that device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from contracts.mqtt import device_topic as topic
from contracts.mqtt import rfc3339
from gateway.outbox import Message
from hardware.regmap import ClassMap, Maps, load_maps

COMMON_INPUTS = 16  # input registers 0-15: identity and health, the "status block"
ALARM_WORD_START, ALARM_WORD_COUNT = 5, 5  # status, uptime (2), alarm_bits, fault_bits


@dataclass
class DeviceInfo:
    id: str
    cls: str
    location: str = ""
    bus: str = ""
    address: int = 0


@dataclass
class DeviceDecoder:
    gateway: str
    info: DeviceInfo
    maps: Maps = field(default_factory=load_maps)
    active: dict[str, str] = field(default_factory=dict)  # alarm type -> alarm_id
    online: bool | None = None
    _state_key: tuple[Any, ...] | None = None
    values: dict[str, float] = field(default_factory=dict)  # last decoded registers

    @property
    def cmap(self) -> ClassMap:
        return self.maps.classes[self.info.cls]

    def snapshot(self) -> dict[str, str]:
        return dict(self.active)

    # -- decoding -------------------------------------------------------------------------
    def alarm_word_changed(self, words: list[int]) -> bool:
        """words = input registers ALARM_WORD_START.. (status .. fault_bits): do they differ
        from what the last full status read said? Then the caller reads the status block."""
        v = self.values
        if "status" not in v:
            return True
        uptime = (words[1] << 16) | words[2]
        return (words[0] != int(v["status"]) or words[3] != int(v["alarm_bits"])
                or words[4] != int(v["fault_bits"])
                or uptime < int(v.get("uptime", 0)))  # rebooted: new boot count, new ids

    def update(self, words: list[int], ts: datetime) -> list[Message]:
        """A block read from input register 0 (status block or the whole map).

        Returns the alarm edges and, when something a dispatcher cares about changed, a new
        retained state. Raises ValueError when the node is not what the config says it is."""
        cmap = self.cmap
        decoded = cmap.decode_inputs(words)
        if int(decoded["device_class"]) != cmap.class_id:
            raise ValueError(
                f"{self.info.id}: configured as {self.info.cls} (class {cmap.class_id}) but the "
                f"node at address {self.info.address} reports class {int(decoded['device_class'])}")
        self.values.update(decoded)
        out = self._alarm_edges(decoded, ts)
        state = self._state(ts, online=True)
        if state is not None:
            out.append(state)
        return out

    @property
    def class_block(self) -> tuple[int, int]:
        """(first register, count) of the class block: input registers 16 .. the map's end."""
        start = self.cmap.input[len(self.maps.common_input)].address
        return start, self.cmap.input_count - start

    def class_telemetry(self, words: list[int], ts: datetime) -> Message:
        """The class block read alone (:attr:`class_block`, a node known online): its values
        (the edge rules read them) and the telemetry message. Status and alarms are the status
        reads' business."""
        start, _ = self.class_block
        padded = [0] * start + list(words)
        self.values.update({r.name: r.decode(padded[r.address : r.address + r.width])
                            for r in self.cmap.input[len(self.maps.common_input):]
                            if r.address + r.width <= len(padded)})
        return self.telemetry(padded, ts)

    def telemetry(self, words: list[int], ts: datetime) -> Message:
        """The class block (input registers 16..) as a telemetry message, with units."""
        cmap = self.cmap
        values: dict[str, float] = {}
        units: dict[str, str] = {}
        for reg in cmap.input[len(self.maps.common_input):]:
            if reg.unit == "counts" or reg.address + reg.width > len(words):
                continue  # raw ADC counts are for technicians (Modbus), not for the city
            value = reg.decode(words[reg.address : reg.address + reg.width])
            values[reg.name] = value
            if reg.unit:
                units[reg.name] = reg.unit
        body = {"v": 1, "device": self.info.id, "class": self.info.cls, "ts": rfc3339(ts),
                "values": values, "units": units}
        return Message(topic(self.gateway, self.info.id, "telemetry"), body, "telemetry",
                       device=self.info.id)

    def offline(self, ts: datetime, reason: str) -> list[Message]:
        """The node stopped answering: say so once; never re-publish its old values."""
        state = self._state(ts, online=False, reason=reason)
        return [state] if state is not None else []

    # -- internals ------------------------------------------------------------------------
    def _alarm_edges(self, decoded: dict[str, float], ts: datetime) -> list[Message]:
        cmap = self.cmap
        word = int(decoded["alarm_bits"])
        boot = int(decoded["boot_count"])
        seq = int(decoded["alarm_seq"])
        out: list[Message] = []
        for bit in cmap.alarm_bits:
            on = bool(word >> bit.bit & 1)
            if on and bit.name not in self.active:
                alarm_id = f"{self.info.id}:{bit.name}:{boot}:{seq}"
                self.active[bit.name] = alarm_id
                out.append(self._alarm(bit.name, "raised", bit.severity, alarm_id, decoded, ts))
            elif not on and bit.name in self.active:
                alarm_id = self.active.pop(bit.name)
                out.append(self._alarm(bit.name, "cleared", bit.severity, alarm_id, decoded, ts))
        return out

    def _alarm(self, kind: str, state: str, severity: str, alarm_id: str,
               decoded: dict[str, float], ts: datetime) -> Message:
        body: dict[str, Any] = {
            "v": 1, "device": self.info.id, "class": self.info.cls, "ts": rfc3339(ts),
            "alarm_id": alarm_id, "type": kind, "state": state, "severity": severity,
            "location": self.info.location,
        }
        bit = next(b for b in self.cmap.alarm_bits if b.name == kind)
        body["description"] = bit.desc
        return Message(topic(self.gateway, self.info.id, "alarm"), body, "alarm",
                       device=self.info.id)

    def _state(self, ts: datetime, online: bool, reason: str = "") -> Message | None:
        cmap = self.cmap
        v = self.values
        faults = [b.name for b in cmap.fault_bits if int(v.get("fault_bits", 0)) >> b.bit & 1]
        status = [b.name for b in self.maps.status_bits if int(v.get("status", 0)) >> b.bit & 1]
        firmware = (f"{int(v['fw_major'])}.{int(v['fw_minor'])}.{int(v['fw_patch'])}"
                    if "fw_major" in v else None)
        key = (online, firmware, tuple(faults), tuple(status), int(v.get("boot_count", 0)))
        if key == self._state_key:
            return None
        self._state_key = key
        self.online = online
        body: dict[str, Any] = {
            "v": 1, "device": self.info.id, "class": self.info.cls, "ts": rfc3339(ts),
            "online": online, "firmware": firmware, "faults": faults, "status": status,
            "boot_count": int(v.get("boot_count", 0)), "location": self.info.location,
            "bus": self.info.bus, "address": self.info.address,
        }
        if reason:
            body["reason"] = reason
        return Message(topic(self.gateway, self.info.id, "state"), body, "state",
                       device=self.info.id, retain=True)


def now() -> datetime:
    return datetime.now(UTC)
