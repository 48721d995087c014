"""The gateway service: buses, panels, rules, storage and MQTT in one supervised TaskGroup.

Producers (bus pollers, panel readers) run the edge rules on what they read first, then hand the
messages to storage (:mod:`gateway.store`: the durable outbox, or memory while the disk refuses);
the MQTT session only ever reads from the outbox. Nothing a producer does waits for the broker or
depends on the disk, so a broker outage costs backlog and a bad disk costs durability, never the
siren.

No side failure stops the service: a bus whose port is missing or vanishes is re-opened by its
own poller while the others run; a metrics port that cannot be bound is logged; a corrupt outbox
is moved aside. Every wait wakes on the stop event, so SIGTERM stops it within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from contracts.mqtt import device_topic as topic
from contracts.mqtt import event_topic, rfc3339
from gateway.bus import BadReply, ModbusBus, ModbusError, NoResponse, PortLost
from gateway.config import GatewayConfig, RtuBusConfig, SerialInputConfig
from gateway.decode import DeviceDecoder, DeviceInfo, now
from gateway.lineproto import LineParser, PanelEvent, read_serial_lines
from gateway.mqtt import Command, MqttSession
from gateway.ota import OtaManager, Packer, Transfer
from gateway.outbox import AlarmState, Message, Outbox, OutboxError
from gateway.panel import PanelAlarms, PanelEdge
from gateway.poller import BusPoller, DevicePoll
from gateway.rtu import RtuBus
from gateway.rules import Action, RuleEngine
from gateway.schedule import Timing
from gateway.store import Store
from gateway.tcp import TcpBus
from gateway.trial import TrialWatch
from hardware.regmap import load_maps

__all__ = ["COMMANDS", "Gateway", "serve"]

log = logging.getLogger(__name__)

COMMANDS = ("write", "coil", "reset", "reboot", "repoll", "ota")
BUS_ERRORS = (NoResponse, ModbusError, BadReply, PortLost)
ACT_RETRY_FIRST_S = 0.2  # a rule's write that failed: first try again after this, doubling
ACT_RETRY_MAX_S = 5.0  # ... up to this
ACT_LOG_EVERY_S = 60.0  # a write that keeps failing is logged at most this often


def _make_bus(bus: Any) -> ModbusBus:
    if isinstance(bus, RtuBusConfig):
        return RtuBus(bus.port, bus.baudrate, bus.parity, timeout=bus.timeout_s,
                      stopbits=bus.stopbits)
    return TcpBus(bus.host, bus.port, timeout=bus.timeout_s)


class Gateway:
    def __init__(self, config: GatewayConfig, *, ota_transfer: Transfer | None = None,
                 ota_packer: Packer | None = None):
        self.config = config
        self.id = config.gateway.id
        storage = Path(config.gateway.storage)
        self._legacy_alarms = storage / "alarms.json"
        #: Devices whose alarm state changed since start: what the outbox remembers for them
        #: is older than what they know (see _outbox_opened).
        self._touched: set[str] = set()
        self.rules = RuleEngine(list(config.rule))
        self.pollers: dict[str, BusPoller] = {}
        self.device_bus: dict[str, BusPoller] = {}
        for bus in config.bus:
            polls = []
            for dev in bus.device:
                plan = bus.poll_plan(dev)
                decoder = DeviceDecoder(self.id, DeviceInfo(dev.id, dev.device_class,
                                                            dev.location, bus.name, dev.address))
                timing = Timing(plan.status_ms / 1000, plan.telemetry_ms / 1000,
                                plan.max_backoff_s, fire=dev.device_class == "fire")
                polls.append(DevicePoll(decoder, timing, timeout_s=plan.timeout_s))
            poller = BusPoller(bus.name, _make_bus(bus), polls, self.publish, self._after_poll)
            self.pollers[bus.name] = poller
            for dev in bus.device:
                self.device_bus[dev.id] = poller
        self.panels: dict[str, PanelAlarms] = {
            p.device_id: PanelAlarms(p.device_id) for p in config.serial_input}
        mqtt = config.mqtt
        password = mqtt.read_password()
        self.session = MqttSession(
            mqtt.host, mqtt.broker_port, gateway_id=self.id,
            ca_file=str(mqtt.cafile) if mqtt.cafile else None,
            cert_file=str(mqtt.certfile) if mqtt.certfile else None,
            key_file=str(mqtt.keyfile) if mqtt.keyfile else None,
            username=mqtt.username,
            password=password.get_secret_value() if password else None,
            keepalive=mqtt.keepalive, health=self.health, on_command=self.on_command,
            status_interval=10.0, store=lambda messages: self.store.put(messages))
        self.started = time.monotonic()
        self.rule_writes = 0
        self.rule_failures = 0
        #: How many decisions each rule output (device, coil, register) has had: a write that
        #: failed is tried again only while it is still the latest decision for its output.
        self._decisions: dict[tuple[str, int | None, str | None], int] = {}
        self.metrics_error = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._trials: dict[str, TrialWatch] = {}
        self._trial_bit = next(b.bit for b in load_maps().status_bits if b.name == "trial")
        #: Firmware delivery (gateway/ota.py); None without an [ota] section: ota refused.
        # A trust file that cannot be read costs the updates, never the polling.
        self.ota: OtaManager | None = None
        self.ota_error = f"gateway {self.id} has no [ota] section: it has no release trust to " \
                         "verify firmware with, so it relays none"
        if config.ota is not None:
            try:
                self.ota = OtaManager(
                    self.id, config.ota, cache_dir=config.ota_cache_dir,
                    state_path=storage / "ota-jobs.json", pollers=self.pollers,
                    device_bus=self.device_bus, publish=self.publish,
                    trial_after_s=config.gateway.confirm_trial_after_s,
                    transfer=ota_transfer, packer=ota_packer)
            except ValueError as exc:
                self.ota_error = f"firmware updates are off: {exc}"
                log.error("%s", self.ota_error)
        # Opened last: opening adopts the remembered alarm state into the producers above.
        self.store = Store.at(storage / "outbox.db",
                              int(config.gateway.max_outbox_mb * 1024 * 1024),
                              on_open=self._outbox_opened)
        if self.store.quarantined is not None:
            self.publish([Message(event_topic(self.id), {
                "v": 1, "ts": rfc3339(now()), "event": "outbox_quarantined",
                "file": str(self.store.quarantined), "reason": self.store.quarantine_reason},
                "event")])

    # -- producing --------------------------------------------------------------------
    @property
    def outbox(self) -> Outbox | None:
        return self.store.outbox

    @property
    def published(self) -> int:
        return self.store.stored

    def publish(self, messages: list[Message]) -> None:
        """Store messages (durably if the disk takes them), then wake the MQTT pump.

        The active alarm ids of every device with an alarm edge in ``messages`` (and each
        panel's raise counter) are stored in the same transaction (outbox ``active_alarms``),
        also when the messages are held in memory first: what the gateway remembers after a
        crash is exactly what it has promised the fleet. Never raises for a storage failure
        (see gateway/store.py)."""
        alarm_state = {m.device: self._alarm_snapshot(m.device) for m in messages
                       if m.kind == "alarm" and m.device is not None}
        self._touched.update(alarm_state)
        self.store.put(messages, alarm_state)
        self.session.notify()

    def _alarm_snapshot(self, device: str) -> dict[str, str]:
        poller = self.device_bus.get(device)
        if poller is not None and device in poller.devices:
            return poller.devices[device].decoder.snapshot()
        if device in self.panels:
            return _encode_panel(self.panels[device].snapshot())
        return {}

    def _alarm_state(self) -> dict[str, dict[str, str]]:
        """Every producer's complete alarm state (empty for a device with none)."""
        devices = [*self.device_bus, *self.panels]
        return {device: self._alarm_snapshot(device) for device in devices}

    def _outbox_opened(self, outbox: Outbox, quarantined: Path | None) -> AlarmState | None:
        """The outbox opened (at start, late after a refusing disk, or new after a quarantine):
        adopt the alarm state it remembers (plus, once, a previous release's alarms.json and
        what can be salvaged from a quarantined file) into every producer whose state has not
        changed since start; return the complete state to store with the held messages, or
        None when the outbox already holds it."""
        stored = outbox.active_alarms()
        salvaged = _salvage_alarms(quarantined) if quarantined is not None and not stored else {}
        legacy = self._take_over_legacy(outbox, stored)
        remembered = {**legacy, **salvaged, **stored}
        for device, state in remembered.items():
            self._adopt(device, state)
        current = self._alarm_state()
        if {k: v for k, v in current.items() if v} == stored:
            return None
        return current

    def _adopt(self, device: str, state: Mapping[str, str]) -> None:
        poller = self.device_bus.get(device)
        if poller is not None and device in poller.devices:
            decoder = poller.devices[device].decoder
            if device not in self._touched:
                decoder.active = dict(state)
            return
        panel = self.panels.get(device)
        if panel is None:
            return
        saved = _decode_panel(state)
        if device in self._touched:  # it raised since start: never re-use a stored id number
            panel.raised = max(panel.raised, int(saved["raised"]))
        else:
            panel.raised, panel.active = int(saved["raised"]), dict(saved["active"])

    def _take_over_legacy(self, outbox: Outbox,
                          stored: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
        """A previous release's alarms.json, stored in the outbox once, then removed."""
        path = self._legacy_alarms
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("%s is unreadable (%s); its active alarms are not taken over", path, exc)
            data = {}
        state: dict[str, dict[str, str]] = {}
        for device, saved in (data.items() if isinstance(data, dict) else ()):
            if isinstance(saved, dict) and "active" in saved:  # a panel: counter and ids
                state[str(device)] = _encode_panel(saved)
            elif isinstance(saved, dict):
                state[str(device)] = {str(k): str(v) for k, v in saved.items()}
        new = {k: v for k, v in state.items() if k not in stored}
        if new:
            outbox.put_many([], alarm_state=new)
        try:
            path.unlink()
        except OSError as exc:  # taken over again next time: the outbox's own state wins
            log.error("cannot remove %s after taking it over: %s", path, exc)
        log.info("took over %d device(s) with active alarms from %s", len(new), path)
        return new

    # -- rules ------------------------------------------------------------------------
    async def _after_poll(self, decoder: DeviceDecoder) -> None:
        for action in self.rules.evaluate(decoder):
            self._spawn(self._act(action))
        self._watch_trial(decoder)
        if self.ota is not None:
            self.ota.observe(decoder)

    # -- trial images -----------------------------------------------------------------
    def _watch_trial(self, decoder: DeviceDecoder) -> None:
        values = decoder.values
        if "status" not in values:
            return
        device = decoder.info.id
        watch = self._trials.get(device)
        if watch is None:
            watch = self._trials[device] = TrialWatch(self.config.gateway.confirm_trial_after_s)
        trial = bool(int(values["status"]) >> self._trial_bit & 1)
        if watch.observe(time.monotonic(), online=bool(decoder.online), trial=trial,
                         boot_count=int(values.get("boot_count", 0)),
                         uptime_s=int(values.get("uptime", 0))):
            self._spawn(self._confirm_trial(decoder, watch))

    async def _confirm_trial(self, decoder: DeviceDecoder, watch: TrialWatch) -> None:
        """Write confirm_image to the node's command register, then say so to the fleet."""
        device = decoder.info.id
        poller = self.device_bus[device]
        address, value = decoder.info.address, load_maps().commands["confirm_image"]
        try:
            await poller.submit(lambda rtu: rtu.write_register(address, 0, value))
        except BUS_ERRORS as exc:
            watch.failed()
            log.warning("%s: confirming its trial image failed (%s); trying again", device, exc)
            return
        v = decoder.values
        firmware = f"{int(v['fw_major'])}.{int(v['fw_minor'])}.{int(v['fw_patch'])}"
        log.warning("%s: trial image %s confirmed after %g s polled healthy", device, firmware,
                    watch.after_s)
        poller.repoll(device)
        self.publish([Message(event_topic(self.id), {
            "v": 1, "ts": rfc3339(now()), "event": "trial_confirmed", "device": device,
            "firmware": firmware, "healthy_s": watch.after_s}, "event")])
        if self.ota is not None:
            self.ota.confirmed(device, firmware)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _act(self, action: Action) -> None:
        poller = self.device_bus.get(action.device)
        if poller is None:
            log.error("rule %s: device %s is on no served bus", action.rule, action.device)
            return
        address = poller.devices[action.device].address
        if action.coil is not None:
            coil, on = action.coil, bool(action.value)

            def write(rtu: ModbusBus) -> Any:
                return rtu.write_coil(address, coil, on)
        else:
            assert action.register is not None
            reg = poller.devices[action.device].decoder.cmap.holding_register(action.register)
            raw = reg.encode(float(action.value))[0]

            def write(rtu: ModbusBus) -> Any:
                return rtu.write_register(address, reg.address, raw)
        # A write lost on the way (noise, a node that missed it, an adapter replugged) is
        # written again until it lands, unless a later decision for the same output came
        # meanwhile; only the node's refusal (an exception response) ends it.
        output = (action.device, action.coil, action.register)
        self._decisions[output] = decision = self._decisions.get(output, 0) + 1
        delay, logged_at = ACT_RETRY_FIRST_S, -ACT_LOG_EVERY_S
        while True:
            try:
                await poller.submit(write)
                break
            except ModbusError as exc:
                self.rule_failures += 1
                log.error("rule %s: %s refused the write: %s", action.rule, action.device, exc)
                return
            except (NoResponse, BadReply, PortLost) as exc:
                self.rule_failures += 1
                if time.monotonic() - logged_at >= ACT_LOG_EVERY_S:
                    logged_at = time.monotonic()
                    log.error("rule %s: writing %s failed: %s; writing it again until it "
                              "lands", action.rule, action.device, exc)
            await asyncio.sleep(delay)
            if self._decisions.get(output) != decision:
                log.warning("rule %s: a later decision for %s replaces the write that failed",
                            action.rule, action.device)
                return
            delay = min(2 * delay, ACT_RETRY_MAX_S)
        self.rule_writes += 1
        log.warning("rule %s: %s set %s=%s (%s)", action.rule, action.device,
                    f"coil {action.coil}" if action.coil is not None else action.register,
                    action.value, action.reason)
        self.publish([Message(event_topic(self.id), {
            "v": 1, "ts": rfc3339(now()), "event": "rule", "rule": action.rule,
            "device": action.device, "coil": action.coil, "register": action.register,
            "value": action.value, "reason": action.reason}, "event")])

    # -- fleet commands ----------------------------------------------------------------
    async def on_command(self, cmd: Command) -> None:
        try:
            await self._command(cmd)
        except (*BUS_ERRORS, ValueError, KeyError) as exc:
            log.warning("command %s for %s (%s) failed: %s", cmd.id, cmd.device, cmd.action,
                        exc)
            self.session.ack(cmd.id, False, str(exc))
            return
        self.session.ack(cmd.id, True)

    async def _command(self, cmd: Command) -> None:
        poller = self.device_bus.get(cmd.device)
        if poller is None:
            raise ValueError(f"unknown device {cmd.device!r} on gateway {self.id}")
        if cmd.action not in COMMANDS:
            raise ValueError(f"unknown action {cmd.action!r}; one of {', '.join(COMMANDS)}")
        dev = poller.devices[cmd.device]
        cmap, address = dev.decoder.cmap, dev.address
        if cmd.action == "ota":  # taken (or refused) at once; progress comes as OtaEvents
            if self.ota is None:
                raise ValueError(self.ota_error)
            self.ota.command(cmd.id, cmd.device, cmd.body)
            return
        if cmd.action == "repoll":
            poller.repoll(cmd.device)
            return
        if cmd.action in ("reset", "reboot"):
            value = load_maps().commands[cmd.action]
            await poller.submit(lambda rtu: rtu.write_register(address, 0, value))
            poller.repoll(cmd.device)
            return
        if cmd.action == "coil":
            state = cmd.body.get("value")
            if not isinstance(state, bool):
                raise ValueError('coil needs "value": true or false')
            coil = int(cmd.body.get("coil", 0))
            await poller.submit(lambda rtu: rtu.write_coil(address, coil, state))
            return
        name = cmd.body.get("register")
        number = cmd.body.get("value")
        if not isinstance(name, str) or not isinstance(number, int | float):
            raise ValueError('write needs "register": <holding register name> and '
                             '"value": <number in engineering units>')
        try:
            reg = cmap.holding_register(name)
        except KeyError:
            raise ValueError(f"class {cmap.name} has no holding register {name!r}") from None
        lo, hi = reg.minimum, reg.maximum
        if lo is not None and hi is not None and not lo <= number <= hi:
            raise ValueError(f"{name}={number} is outside {lo:g}–{hi:g} {reg.unit}".rstrip())
        raw = reg.encode(float(number))[0]
        await poller.submit(lambda rtu: rtu.write_register(address, reg.address, raw))
        poller.repoll(cmd.device)

    # -- panels ------------------------------------------------------------------------
    def on_panel_event(self, panel: SerialInputConfig, event: PanelEvent) -> None:
        """One line of a panel's printer port: rules first, then the messages."""
        edges = self.panels[panel.device_id].apply(event)
        for edge in edges:
            if edge.state == "raised":
                for rule_action in self.rules.event(panel.device_id, edge.kind):
                    self._spawn(self._act(rule_action))
        messages = [self._panel_message(panel, edge) for edge in edges]
        if messages:
            self.publish(messages)

    def _panel_message(self, panel: SerialInputConfig, edge: PanelEdge) -> Message:
        event = edge.event
        base: dict[str, Any] = {"v": 1, "device": panel.device_id, "class": "panel",
                                "ts": rfc3339(now()), "location": panel.location}
        if edge.state == "event":
            return Message(topic(self.id, panel.device_id, "event"), {
                **base, "kind": event.kind, "zone": event.zone, "point": event.point,
                "text": event.text, "raw": event.raw}, "event", device=panel.device_id)
        body = {**base, "alarm_id": edge.alarm_id, "type": edge.kind, "state": edge.state,
                "zone": edge.zone, "point": edge.point, "text": event.text}
        if edge.state == "raised":
            body["severity"] = event.severity
        return Message(topic(self.id, panel.device_id, "alarm"), body, "alarm",
                       device=panel.device_id)

    async def _panel(self, panel: SerialInputConfig, stop: asyncio.Event) -> None:
        """Read one panel's port until stop; a port that fails is re-opened every 5 s."""
        tz = ZoneInfo(panel.timezone) if panel.timezone else None
        while not stop.is_set():
            parser = LineParser(panel.parser_profile, tz=tz)
            try:
                await _until(stop, read_serial_lines(
                    panel.port, panel.baudrate, panel.parity, parser,
                    lambda ev: self.on_panel_event(panel, ev),
                    bytesize=panel.bytesize, stopbits=panel.stopbits))
            except (OSError, ValueError) as exc:
                log.error("panel %s on %s: %s; retrying in 5 s", panel.device_id, panel.port, exc)
            await _until(stop, asyncio.sleep(5))

    # -- health ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        outbox: dict[str, Any] = {"depth": 0, "bytes": 0, "oldest_age_s": 0.0,
                                  "dropped_telemetry": 0, "dead_letters": 0}
        if self.outbox is None:
            outbox["error"] = "not open: " + self.store.last_error
        else:
            try:
                stats = self.outbox.stats()
                outbox.update(depth=stats.depth, bytes=stats.bytes,
                              oldest_age_s=round(stats.oldest_age_s, 1),
                              dropped_telemetry=stats.dropped_telemetry,
                              dead_letters=stats.dead_letters,
                              dead_letters_discarded=stats.dead_letters_discarded,
                              epoch=stats.epoch)
            except (OutboxError, sqlite3.Error) as exc:  # a failing disk: health still reports
                outbox["error"] = str(exc)
        return {
            "uptime_s": round(time.monotonic() - self.started, 1),
            "outbox": outbox,
            "storage": self.store.stats(),
            "mqtt": self.session.stats.snapshot(),
            "buses": {name: p.stats() for name, p in self.pollers.items()},
            "rules": {"fired": self.rules.fired, "writes": self.rule_writes,
                      "failures": self.rule_failures},
            "messages_stored": self.published,
            "ota": self.ota.health() if self.ota is not None else {},
            **({"metrics_error": self.metrics_error} if self.metrics_error else {}),
        }

    def prometheus(self) -> str:
        """Health as Prometheus text exposition (scraped at metrics_port)."""
        h = self.health()
        groups: dict[str, list[str]] = {}  # one group per metric, as the text format requires

        def metric(name: str, value: float, help_text: str, kind: str = "gauge",
                   labels: str = "") -> None:
            group = groups.setdefault(name, [f"# HELP {name} {help_text}",
                                             f"# TYPE {name} {kind}"])
            group.append(f"{name}{{gateway=\"{self.id}\"{labels}}} {value}")

        metric("edgefleet_outbox_depth", h["outbox"]["depth"], "Messages waiting for the broker")
        metric("edgefleet_outbox_bytes", h["outbox"]["bytes"], "Payload bytes waiting")
        metric("edgefleet_outbox_dropped_telemetry_total", h["outbox"]["dropped_telemetry"],
               "Telemetry dropped by the disk bound", "counter")
        metric("edgefleet_outbox_dead_letters_total", h["outbox"]["dead_letters"],
               "Messages refused by the broker", "counter")
        metric("edgefleet_storage_held_in_memory", h["storage"]["held_in_memory"],
               "Messages waiting in memory because the disk refuses writes")
        metric("edgefleet_storage_lost_by_disk_total", h["storage"]["lost_by_disk"],
               "Messages given up because the disk refused them too long", "counter")
        for name, bus in h["buses"].items():
            lb = f',bus="{name}"'
            metric("edgefleet_bus_transactions_total", bus["transactions"],
                   "Modbus transactions", "counter", lb)
            metric("edgefleet_bus_failures_total", bus["failures"],
                   "Modbus transactions without a valid answer", "counter", lb)
            metric("edgefleet_bus_link_up", 1 if bus["link"] == "up" else 0,
                   "1 while the bus port (or TCP link) is open", labels=lb)
            for dev_id, dev in bus["devices"].items():
                ld = f'{lb},device="{dev_id}"'
                metric("edgefleet_device_online", 1 if dev["online"] else 0,
                       "1 while the node answers", labels=ld)
                metric("edgefleet_device_timeouts_total", dev["timeouts"],
                       "Polls without an answer", "counter", ld)
                metric("edgefleet_device_garbled_total", dev["garbled"],
                       "Replies without a valid frame (CRC errors, noise): the node is alive",
                       "counter", ld)
                metric("edgefleet_device_bad_replies_total", dev["bad_replies"],
                       "Replies that did not answer the request (protocol faults)",
                       "counter", ld)
        for key, value in h["mqtt"].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metric(f"edgefleet_mqtt_{key}", value, f"MQTT session {key}")
        return "\n".join(line for group in groups.values() for line in group) + "\n"

    async def _serve_metrics(self, port: int, stop: asyncio.Event) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                await reader.readuntil(b"\r\n\r\n")
                body = self.prometheus().encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                             b"Content-Length: " + str(len(body)).encode() +
                             b"\r\nConnection: close\r\n\r\n" + body)
                await writer.drain()
            writer.close()

        try:
            server = await asyncio.start_server(handle, "127.0.0.1", port)
        except OSError as exc:  # the port is taken: no metrics, everything else runs
            self.metrics_error = f"cannot serve metrics on 127.0.0.1:{port}: {exc}"
            log.error("%s; running without the Prometheus endpoint", self.metrics_error)
            return
        log.info("Prometheus metrics on http://127.0.0.1:%d/metrics", port)
        async with server:
            await _until(stop, server.serve_forever())

    # -- running -----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set. Side failures (a bus port, the metrics port) are each
        handled by their own task; nothing here waits longer than a poll to see ``stop``."""
        log.info("gateway %s: %d bus(es), %d device(s), %d panel(s), %d rule(s); broker %s:%d",
                 self.id, len(self.pollers), len(self.device_bus), len(self.panels),
                 len(self.config.rule), self.config.mqtt.host, self.config.mqtt.broker_port)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._mqtt(stop), name="mqtt")
                tg.create_task(self._flush_held(stop), name="store")
                for name, poller in self.pollers.items():
                    tg.create_task(poller.run(stop), name=f"bus-{name}")
                for panel in self.config.serial_input:
                    tg.create_task(self._panel(panel, stop), name=f"panel-{panel.device_id}")
                if self.ota is not None:
                    tg.create_task(self.ota.run(stop), name="ota")
                if self.config.gateway.metrics_port:
                    tg.create_task(self._serve_metrics(self.config.gateway.metrics_port, stop),
                                   name="metrics")
        finally:
            for task in list(self._tasks):
                task.cancel()
            self.store.flush()
            if self.outbox is not None:
                self.outbox.close()

    async def _mqtt(self, stop: asyncio.Event) -> None:
        """The MQTT session publishes from the outbox, so it starts once the outbox is open."""
        while self.outbox is None and not stop.is_set():
            await _until(stop, asyncio.sleep(1.0))
        if self.outbox is not None:
            await self.session.pump(self.outbox, stop)

    async def _flush_held(self, stop: asyncio.Event) -> None:
        """Messages held in memory while the disk refused them go out once it takes writes."""
        while not stop.is_set():
            await _until(stop, asyncio.sleep(1.0))
            if (not self.store.healthy or self.outbox is None) and self.store.flush():
                self.session.notify()


async def _until(stop: asyncio.Event, coro: Any) -> None:
    """Run ``coro`` until it ends or ``stop`` is set (then it is cancelled)."""
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.done() and not task.cancelled():
        task.result()  # re-raise what the coroutine raised


#: The key under which a panel's raise counter is kept beside its alarm ids in the outbox
#: (``active_alarms``); no condition key starts with "#".
RAISED_KEY = "#raised"


def _encode_panel(snapshot: Mapping[str, Any]) -> dict[str, str]:
    """A panel's state (``{"raised": n, "active": {key: id}}``) as outbox alarm state."""
    active = snapshot.get("active", {})
    return {**{str(k): str(v) for k, v in dict(active).items()},
            RAISED_KEY: str(int(snapshot.get("raised", 0)))}


def _decode_panel(state: Mapping[str, str]) -> dict[str, Any]:
    """Outbox alarm state -> a panel's state; an id map without a counter (an old format)
    starts the counter past every stored id's number."""
    active = {k: v for k, v in state.items() if k != RAISED_KEY}
    numbers = [int(v.rsplit(":", 1)[1]) for v in active.values()
               if v.rsplit(":", 1)[-1].isdigit()]
    raised = max([int(state.get(RAISED_KEY, 0)), *numbers])
    return {"raised": raised, "active": active}


def _salvage_alarms(path: Path) -> dict[str, dict[str, str]]:
    """The active alarms a quarantined (corrupt) outbox still yields, read-only; {} if none."""
    state: dict[str, dict[str, str]] = {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            for device, key, alarm_id in db.execute(
                    "SELECT device, key, alarm_id FROM active_alarms"):
                state.setdefault(str(device), {})[str(key)] = str(alarm_id)
        finally:
            db.close()
    except sqlite3.Error as exc:
        log.error("no active alarms could be salvaged from %s (%s); alarms still active will "
                  "be raised again with new ids", path, exc)
        return {}
    log.warning("salvaged the active alarms of %d device(s) from %s", len(state), path)
    return state


async def serve(config: GatewayConfig, stop: asyncio.Event | None = None) -> None:
    """Run a gateway until ``stop`` is set, or until SIGINT/SIGTERM when none is given."""
    import signal

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await Gateway(config).run(stop)
