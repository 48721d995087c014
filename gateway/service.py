"""The gateway service: buses, panels, rules, outbox and MQTT in one supervised TaskGroup.

Producers (bus pollers, panel readers) only ever write to the durable outbox; the MQTT session
only ever reads from it. Nothing a producer does waits for the broker, so a broker outage costs
nothing but backlog, and the backlog is visible in the gateway's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from contracts.mqtt import device_topic as topic
from contracts.mqtt import event_topic, rfc3339
from gateway.config import GatewayConfig, RtuBusConfig, SerialInputConfig, load_config
from gateway.decode import DeviceDecoder, DeviceInfo, now
from gateway.lineproto import LineParser, PanelEvent, read_serial_lines
from gateway.mqtt import Command, MqttSession
from gateway.outbox import Message, Outbox
from gateway.poller import BusPoller, DevicePoll
from gateway.rtu import ModbusError, NoResponse, RtuBus
from gateway.rules import Action, RuleEngine
from hardware.regmap import load_maps

log = logging.getLogger(__name__)

COMMANDS = ("write", "coil", "reset", "reboot", "repoll")


class Gateway:
    def __init__(self, config: GatewayConfig):
        self.config = config
        self.id = config.gateway.id
        storage = Path(config.gateway.storage)
        storage.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(storage / "outbox.db",
                             max_bytes=int(config.gateway.max_outbox_mb * 1024 * 1024))
        saved = self._active_alarms(storage / "alarms.json")
        self.rules = RuleEngine(list(config.rule))
        self.pollers: dict[str, BusPoller] = {}
        self.device_bus: dict[str, BusPoller] = {}
        for bus in config.bus:
            if not isinstance(bus, RtuBusConfig):
                log.warning("bus %s: Modbus TCP is declared but not yet served; skipped",
                            bus.name)
                continue
            rtu = RtuBus(bus.port, bus.baudrate, bus.parity, timeout=bus.timeout_s)
            polls = []
            for dev in bus.device:
                plan = bus.poll_plan(dev)
                decoder = DeviceDecoder(self.id, DeviceInfo(dev.id, dev.device_class,
                                                            dev.location, bus.name, dev.address))
                decoder.active = dict(saved.get(dev.id, {}))
                polls.append(DevicePoll(decoder, plan.status_ms / 1000, plan.telemetry_ms / 1000,
                                        plan.max_backoff_s))
            poller = BusPoller(bus.name, rtu, polls, self.publish, self._after_poll)
            self.pollers[bus.name] = poller
            for dev in bus.device:
                self.device_bus[dev.id] = poller
        self.panel_alarms: dict[str, dict[str, str]] = {
            p.device_id: dict(saved.get(p.device_id, {})) for p in config.serial_input}
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
            status_interval=10.0)
        self.started = time.monotonic()
        self.published = 0
        self.rule_writes = 0
        self.rule_failures = 0

    # -- producing --------------------------------------------------------------------
    def publish(self, messages: list[Message]) -> None:
        """Store messages durably (assigning seq), then wake the MQTT pump.

        The active alarm ids of every device with an alarm edge in ``messages`` are stored in
        the same transaction (outbox ``active_alarms``), so what the gateway remembers after
        a crash is exactly what it has promised the fleet.
        """
        alarm_state = {m.device: self._alarm_snapshot(m.device) for m in messages
                       if m.kind == "alarm" and m.device is not None}
        self.outbox.put_many(messages, alarm_state=alarm_state)
        self.published += len(messages)
        self.session.notify()

    def _alarm_snapshot(self, device: str) -> dict[str, str]:
        poller = self.device_bus.get(device)
        if poller is not None and device in poller.devices:
            return poller.devices[device].decoder.snapshot()
        return dict(self.panel_alarms.get(device, {}))

    def _active_alarms(self, legacy: Path) -> dict[str, dict[str, str]]:
        """Active alarm ids from the outbox; a previous release's alarms.json is taken over
        once (stored in the outbox, then removed)."""
        if legacy.exists():
            try:
                data = json.loads(legacy.read_text())
                state = {str(k): {str(t): str(i) for t, i in dict(v).items()}
                         for k, v in data.items()}
            except (ValueError, TypeError, AttributeError):
                log.error("%s is unreadable; its active alarms are not taken over", legacy)
            else:
                known = self.outbox.active_alarms()
                self.outbox.put_many([], alarm_state={k: v for k, v in state.items()
                                                      if k not in known})
                log.info("took over %d device(s) with active alarms from %s", len(state),
                         legacy)
            legacy.unlink()
        return self.outbox.active_alarms()

    # -- rules ------------------------------------------------------------------------
    async def _after_poll(self, decoder: DeviceDecoder) -> None:
        for action in self.rules.evaluate(decoder):
            self._spawn(self._act(action))

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
        try:
            if action.coil is not None:
                coil = action.coil
                await poller.submit(lambda rtu: rtu.write_coil(address, coil, bool(action.value)))
            else:
                assert action.register is not None
                cmap = poller.devices[action.device].decoder.cmap
                reg = cmap.holding_register(action.register)
                raw = reg.encode(float(action.value))[0]
                await poller.submit(lambda rtu: rtu.write_register(address, reg.address, raw))
        except (NoResponse, ModbusError) as exc:
            self.rule_failures += 1
            log.error("rule %s: writing %s failed: %s", action.rule, action.device, exc)
            return
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
        except (NoResponse, ModbusError, ValueError, KeyError) as exc:
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
        active = self.panel_alarms[panel.device_id]
        ts = rfc3339(now())
        messages = []
        base = {"v": 1, "device": panel.device_id, "class": "panel", "ts": ts,
                "location": panel.location}
        action = event.action
        if action == "raised" and event.key not in active:
            alarm_id = f"{panel.device_id}:{event.key}:{int(time.time())}"
            active[event.key] = alarm_id
            messages.append(Message(topic(self.id, panel.device_id, "alarm"), {
                **base, "alarm_id": alarm_id, "type": event.kind, "state": "raised",
                "severity": event.severity, "zone": event.zone, "point": event.point,
                "text": event.text}, "alarm", device=panel.device_id))
            for rule_action in self.rules.event(panel.device_id, event.kind):
                self._spawn(self._act(rule_action))
        elif action in ("cleared", "cleared_all"):
            for key in list(active):
                if action == "cleared_all" or key == event.key or (
                        event.clears is None and key.split(":")[1:] == event.key.split(":")[1:]):
                    alarm_id = active.pop(key)
                    messages.append(Message(topic(self.id, panel.device_id, "alarm"), {
                        **base, "alarm_id": alarm_id, "type": key.split(":")[0],
                        "state": "cleared", "text": event.text}, "alarm",
                        device=panel.device_id))
        else:
            messages.append(Message(topic(self.id, panel.device_id, "event"), {
                **base, "kind": event.kind, "zone": event.zone, "point": event.point,
                "text": event.text, "raw": event.raw}, "event", device=panel.device_id))
        if messages:
            self.publish(messages)

    async def _panel(self, panel: SerialInputConfig, stop: asyncio.Event) -> None:
        tz = ZoneInfo(panel.timezone) if panel.timezone else None
        while not stop.is_set():
            parser = LineParser(panel.parser_profile, tz=tz)
            try:
                await read_serial_lines(panel.port, panel.baudrate, panel.parity, parser,
                                        lambda ev: self.on_panel_event(panel, ev),
                                        bytesize=panel.bytesize, stopbits=panel.stopbits)
            except (OSError, ValueError) as exc:
                log.error("panel %s on %s: %s; retrying in 5 s", panel.device_id, panel.port, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=5)

    # -- health ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        stats = self.outbox.stats()
        return {
            "uptime_s": round(time.monotonic() - self.started, 1),
            "outbox": {"depth": stats.depth, "bytes": stats.bytes,
                       "oldest_age_s": round(stats.oldest_age_s, 1),
                       "dropped_telemetry": stats.dropped_telemetry,
                       "dead_letters": stats.dead_letters,
                       "dead_letters_discarded": stats.dead_letters_discarded,
                       "epoch": stats.epoch},
            "mqtt": self.session.stats.snapshot(),
            "buses": {name: p.stats() for name, p in self.pollers.items()},
            "rules": {"fired": self.rules.fired, "writes": self.rule_writes,
                      "failures": self.rule_failures},
            "messages_stored": self.published,
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
        for name, bus in h["buses"].items():
            lb = f',bus="{name}"'
            metric("edgefleet_bus_transactions_total", bus["transactions"],
                   "Modbus transactions", "counter", lb)
            metric("edgefleet_bus_failures_total", bus["failures"],
                   "Modbus transactions without a valid answer", "counter", lb)
            for dev_id, dev in bus["devices"].items():
                ld = f'{lb},device="{dev_id}"'
                metric("edgefleet_device_online", 1 if dev["online"] else 0,
                       "1 while the node answers", labels=ld)
                metric("edgefleet_device_timeouts_total", dev["timeouts"],
                       "Polls without an answer", "counter", ld)
        for key, value in h["mqtt"].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metric(f"edgefleet_mqtt_{key}", value, f"MQTT session {key}")
        return "\n".join(line for group in groups.values() for line in group) + "\n"

    async def _serve_metrics(self, port: int) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                await reader.readuntil(b"\r\n\r\n")
                body = self.prometheus().encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                             b"Content-Length: " + str(len(body)).encode() +
                             b"\r\nConnection: close\r\n\r\n" + body)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", port)
        log.info("Prometheus metrics on http://127.0.0.1:%d/metrics", port)
        async with server:
            await server.serve_forever()

    # -- running -----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        for poller in self.pollers.values():
            await poller.rtu.connect()
        log.info("gateway %s: %d bus(es), %d device(s), %d panel(s), %d rule(s); broker %s:%d",
                 self.id, len(self.pollers), len(self.device_bus), len(self.panel_alarms),
                 len(self.config.rule), self.config.mqtt.host, self.config.mqtt.broker_port)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.session.pump(self.outbox, stop), name="mqtt")
                for name, poller in self.pollers.items():
                    tg.create_task(poller.run(stop), name=f"bus-{name}")
                for panel in self.config.serial_input:
                    tg.create_task(self._panel(panel, stop), name=f"panel-{panel.device_id}")
                if self.config.gateway.metrics_port:
                    metrics = tg.create_task(self._serve_metrics(self.config.gateway.metrics_port))
                    stop_task = tg.create_task(stop.wait())
                    stop_task.add_done_callback(lambda _: metrics.cancel())
        finally:
            for task in list(self._tasks):
                task.cancel()
            for poller in self.pollers.values():
                poller.rtu.close()
            self.outbox.close()


def run_main(path: str) -> int:
    """`edgefleet gateway run CONFIG`."""
    from gateway.config import ConfigError

    try:
        config = load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr, flush=True)
        return 1

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Gateway(config).run(stop)

    asyncio.run(main())
    return 0
