"""``edgefleet demo``: four real firmware nodes on one simulated bus, watched like a gateway does.

A fire, a flood, a water and an air node (the MicroPython firmware, unmodified) share one
simulated RS-485 bus while a scenario plays over their virtual sensors. The demo polls every
node's input block about once per second through the gateway's own :class:`~gateway.rtu.RtuBus`,
decodes it with the register maps, and shows readings, status, alarms and faults live. When the
scenario has put its fire out and the fire node still holds its latched alarm, the demo acts as
the fire-safety officer after inspection and sends the reset command.

On a terminal the view is a :class:`rich.live.Live` dashboard; anywhere else (CI, a pipe) it
prints plain lines: every event as it happens and a snapshot of all nodes every few seconds.
Labels are English with Vietnamese beside them, for the technicians who run the city's sensors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from gateway.rtu import ModbusError, NoResponse, RtuBus
from hardware.regmap import Bit, ClassMap, Maps, Register, load_maps
from hardware.sim import lifeline
from hardware.sim.scenario import Event, Scenario, ScenarioError
from hardware.sim.simbus import SimBus, SimError
from hardware.sim.simrun import PhysicsFeed, attach_physics, find_scenario

log = logging.getLogger(__name__)

NODES: tuple[tuple[int, str], ...] = ((1, "fire"), (2, "flood"), (3, "water"), (4, "air"))

POLL_PERIOD_S = 1.0        # each node's input block about once per second, as a gateway does
RENDER_PERIOD_S = 0.25     # dashboard refresh (and end-of-run checks)
PLAIN_PERIOD_S = 5.0       # a snapshot line per node this often when not on a terminal
END_GRACE_S = 3.0          # keep watching this long after the scenario's last second
STARTUP_GRACE_S = 8.0      # a node that has not answered yet is booting, not failing, this long
OFFLINE_AFTER = 2          # consecutive failed polls before a node shows OFFLINE
RESET_COOLDOWN_S = 10.0    # between two operator resets of the same node
FIRE_OUT_SMOKE = 0.5       # %/m of true smoke below which the officer calls the fire out
FIRE_OUT_MARGIN_C = 5.0    # ... and the room this far below the fixed heat threshold
EVENTS_SHOWN = 7
WIDE_COLUMNS = 130         # terminal width from which readings go two to a line
COMPACT_COLUMNS = 100      # below this width the node table folds columns together

CLASS_LABELS = {
    "fire": "Fire / Cháy",
    "flood": "Flood / Ngập",
    "water": "Water / Nước",
    "air": "Air / Không khí",
}

# state -> (label, style)
STATES: dict[str, tuple[str, str]] = {
    "ok": ("OK / BÌNH THƯỜNG", "bold green"),
    "warning": ("WARNING / CẢNH BÁO", "bold yellow"),
    "alarm": ("ALARM / BÁO ĐỘNG", "bold blink red"),
    "fault": ("FAULT / LỖI", "bold magenta"),
    "offline": ("OFFLINE / MẤT KẾT NỐI", "grey50"),
    "starting": ("STARTING / ĐANG KHỞI ĐỘNG", "grey50 italic"),
}

# The readings a technician looks at first, per class: (register name, short label).
READINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "fire": (("smoke", "smoke"), ("temperature", "temp"), ("heat_rise_rate", "rise")),
    "flood": (("level", "level"), ("level_rate", "rate"), ("flood_stage", "stage")),
    "water": (("pressure", "pressure"), ("ph", "pH"), ("turbidity", "turbidity"),
              ("chlorine", "chlorine")),
    "air": (("pm2_5", "PM2.5"), ("pm10", "PM10"), ("co2", "CO2"), ("aqi_vn", "VN AQI"),
            ("aqi_us", "US AQI")),
}
FLOOD_STAGES = {0: "normal", 1: "alert I", 2: "alert II", 3: "alert III"}

# Readings that are rates the node measures against its own clock (a regression over its recent
# samples), and how many seconds of readings it needs before it reports one: the firmware's
# rise_min_span_ms (firmware/app/classes/<class>.py DEFAULTS; tests/bus/test_demo.py checks
# them). Before that the node's register reads 0.0, which is "not measured yet", not "still".
RATE_READINGS: dict[str, tuple[str, float]] = {
    "fire": ("heat_rise_rate", 20.0),
    "flood": ("level_rate", 50.0),
}


def demo_time_scale(scenario: Scenario, classes: Iterable[str]) -> float:
    """How fast the demo's physics runs: the scenario's own pace, or real time as soon as one of
    the classes shown reads a rate. The node measures a rate on its own clock, so physics run at
    ×2 would rise twice as fast as the node's window can follow: a flash flood would climb from
    0.15 m to 1.2 m before the gauge had the history to report any rise at all."""
    if any(cls in RATE_READINGS for cls in classes):
        return 1.0
    return scenario.time_scale
SEVERITY_STYLES = {"critical": "bold red", "major": "red", "warning": "yellow"}
EVENT_STYLES = {"scenario": "cyan", "operator": "bold yellow", "alarm": "red", "warning": "yellow",
                "fault": "magenta", "link": "grey50", "clear": "green"}


# ----------------------------------------------------------------------------- formatting
_FULL_SCALE = {"i16": (-0x8000, 0x7FFF), "u16": (0, 0xFFFF), "u32": (0, 0xFFFFFFFF)}


def format_value(reg: Register, value: float) -> str:
    """A register value with as many decimals as its scale carries (0.01 -> 2).

    A value pinned at the register's full scale is shown as '≥' (or '≤') it: the node clipped it.
    """
    decimals = len(f"{reg.scale:g}".partition(".")[2])
    text = f"{value:.{decimals}f}"
    raw = round(value * reg.multiplier)
    low, high = _FULL_SCALE[reg.type]
    if raw >= high:
        return "≥" + text
    if raw <= low and low < 0:
        return "≤" + text
    return text


def format_readings(cls: str, cmap: ClassMap, values: dict[str, float]) -> list[str]:
    """'smoke 1.25 %/m', 'temp 31.0 °C', ... for the readings of ``cls`` present in values.

    A rate the node cannot have measured yet (its uptime is shorter than the history the
    firmware needs, see RATE_READINGS) reads 'rate — (after 50 s)', not a reassuring 0.0."""
    out = []
    rate_name, history_s = RATE_READINGS.get(cls, ("", 0.0))
    for name, label in READINGS[cls]:
        if name not in values:
            continue
        value = values[name]
        if name == rate_name and values.get("uptime", history_s) < history_s:
            out.append(f"{label} — (after {history_s:.0f} s)")
            continue
        if name == "flood_stage":
            out.append(f"{label} {FLOOD_STAGES.get(int(value), str(int(value)))}")
            continue
        reg = cmap.input_register(name)
        unit = f" {reg.unit}" if reg.unit and reg.unit != label else ""
        out.append(f"{label} {format_value(reg, value)}{unit}")
    return out


def active_bits(word: int, bits: tuple[Bit, ...]) -> list[str]:
    """Names of the set bits of ``word`` per a Bit table (unknown bits as 'bitN')."""
    names: list[str] = []
    known = 0
    for b in bits:
        known |= 1 << b.bit
        if word >> b.bit & 1:
            names.append(b.name)
    names.extend(f"bit{n}" for n in range(16) if word >> n & 1 and not known >> n & 1)
    return names


# ----------------------------------------------------------------------------- state
@dataclass
class NodeState:
    """What the demo knows of one node, from its polls."""

    address: int
    cls: str
    cmap: ClassMap
    values: dict[str, float] = field(default_factory=dict)
    status: set[str] = field(default_factory=set)
    alarms: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    answered: bool = False
    misses: int = 0
    last_error: str = ""
    polls_ok: int = 0
    polls_failed: int = 0
    alarms_raised: int = 0         # raise edges of alarm bits seen between polls
    alarm_names_seen: list[str] = field(default_factory=list)
    faults_seen: list[str] = field(default_factory=list)
    resets: int = 0
    reboots: int = 0
    last_reset: float = float("-inf")
    state: str = "starting"

    @property
    def label(self) -> str:
        return f"node {self.address} {self.cls}"

    def classify(self) -> str:
        if not self.answered:
            return "offline" if self.misses and self.polls_failed else "starting"
        if self.misses >= OFFLINE_AFTER:
            return "offline"
        if "alarm" in self.status:
            return "alarm"
        if "fault" in self.status or self.faults:
            return "fault"
        if "warning" in self.status or self.alarms:
            return "warning"
        return "ok"


@dataclass
class LogLine:
    sim_t: float
    kind: str
    text: str


class Demo:
    """The demo's state and its three activities: polling, rendering, ending."""

    def __init__(self, scenario: Scenario, maps: Maps, baud: int, duration: float | None,
                 console: Console) -> None:
        self.scenario = scenario
        self.maps = maps
        self.baud = baud
        self.duration = duration
        self.console = console
        self.live_view = console.is_terminal
        self.nodes = [NodeState(a, c, maps.classes[c]) for a, c in NODES]
        self.time_scale = demo_time_scale(scenario, tuple(c for _, c in NODES))
        self.feed: PhysicsFeed | None = None
        self.master_path = ""       # the bus's master pty, once the bus is up
        self.started = time.monotonic()
        self.done_since: float | None = None
        self.stop = asyncio.Event()
        self.interrupted = False
        self.end_reason = ""
        self._log: deque[LogLine] = deque(maxlen=200)
        self._log_lock = threading.Lock()
        self._printed = 0           # log lines already printed (plain mode)
        self._logged = 0            # log lines ever added
        self._last_plain = float("-inf")
        heat_fixed = maps.classes["fire"].holding_register("heat_fixed").default
        self._fire_out_c = (heat_fixed if heat_fixed is not None else 58.0) - FIRE_OUT_MARGIN_C

    # -- time ------------------------------------------------------------------------------
    @property
    def sim_time(self) -> float:
        sim = self.feed.sim_time if self.feed else 0.0
        return min(sim, self.scenario.duration)

    def begin(self, feed: PhysicsFeed, master_path: str) -> None:
        """The bus is up: start the clocks."""
        self.feed = feed
        self.master_path = master_path
        self.started = self._last_plain = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # -- events ----------------------------------------------------------------------------
    def add_log(self, kind: str, text: str, sim_t: float | None = None) -> None:
        with self._log_lock:
            self._log.append(LogLine(self.sim_time if sim_t is None else sim_t, kind, text))
            self._logged += 1

    def on_event(self, sim_t: float, event: Event) -> None:
        """Scenario events, from the simulator's feed thread: the story first, then the action.

        (``str(event)`` reads "t=10s node 1: ignite(growth=0.05) - A waste bin catches fire";
        the panel has its own time column and cuts long lines, so the note goes first.)
        """
        action = f"{event.action}({', '.join(f'{k}={v}' for k, v in event.params.items())})"
        text = f"{event.target}: {event.note} · {action}" if event.note else \
            f"{event.target}: {action}"
        self.add_log("scenario", text, sim_t)

    def recent_log(self, n: int) -> list[LogLine]:
        with self._log_lock:
            return list(self._log)[-n:]

    def unprinted_log(self) -> list[LogLine]:
        with self._log_lock:
            fresh = min(self._logged - self._printed, len(self._log))
            self._printed = self._logged
            return list(self._log)[len(self._log) - fresh:] if fresh else []

    # -- polling ---------------------------------------------------------------------------
    async def poll_loop(self, rtu: RtuBus) -> None:
        next_round = time.monotonic()
        while not self.stop.is_set():
            for node in self.nodes:
                if self.stop.is_set():
                    return
                await self.poll(rtu, node)
            next_round += POLL_PERIOD_S
            delay = next_round - time.monotonic()
            if delay < 0:
                next_round, delay = time.monotonic(), 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)

    async def poll(self, rtu: RtuBus, node: NodeState) -> None:
        cmap = node.cmap
        try:
            words = await rtu.read_input(node.address, 0, cmap.input_count)
        except (NoResponse, ModbusError) as exc:
            self._poll_failed(node, exc)
        else:
            self._poll_ok(node, words)
            if node.cls == "fire":
                await self._maybe_reset(rtu, node)
        self._update_state(node)

    def _poll_failed(self, node: NodeState, exc: Exception) -> None:
        node.misses += 1
        node.last_error = "no response" if isinstance(exc, NoResponse) else str(exc)
        if node.answered or self.elapsed > STARTUP_GRACE_S:
            node.polls_failed += 1   # a node still booting is not a failed poll

    def _poll_ok(self, node: NodeState, words: list[int]) -> None:
        cmap = node.cmap
        values = cmap.decode_inputs(words)
        if not node.answered:
            node.answered = True
            if node.misses and node.polls_failed:
                self.add_log("link", f"{node.label}: answering / đã kết nối")
        elif node.misses >= OFFLINE_AFTER:
            self.add_log("link", f"{node.label}: back online / kết nối lại")
        node.misses = 0
        node.polls_ok += 1
        if node.values and (values.get("boot_count") != node.values.get("boot_count")
                            or values.get("uptime", 0.0) < node.values.get("uptime", 0.0)):
            node.reboots += 1
            self.add_log("fault", f"{node.label}: rebooted (boot {values.get('boot_count', 0):.0f})"
                                  f" / đã khởi động lại")
        node.values = values
        node.status = set(active_bits(int(values.get("status", 0)), self.maps.status_bits))
        alarms = active_bits(int(values.get("alarm_bits", 0)), cmap.alarm_bits)
        faults = active_bits(int(values.get("fault_bits", 0)), cmap.fault_bits)
        raised = [a for a in alarms if a not in node.alarms]
        node.alarms_raised += len(raised)
        if raised:
            severity = {b.name: b.severity for b in cmap.alarm_bits}
            serious = any(severity.get(a) != "warning" for a in raised)
            self.add_log("alarm" if serious else "warning",
                         f"{node.label}: {', '.join(raised)} raised"
                         + (" / báo động" if serious else " / cảnh báo"))
        new_faults = [f for f in faults if f not in node.faults]
        if new_faults:
            self.add_log("fault", f"{node.label}: fault {', '.join(new_faults)} / lỗi cảm biến")
        cleared_faults = [f for f in node.faults if f not in faults]
        if cleared_faults:
            self.add_log("clear", f"{node.label}: fault {', '.join(cleared_faults)} cleared")
        node.alarms, node.faults = alarms, faults
        for name in alarms:
            if name not in node.alarm_names_seen:
                node.alarm_names_seen.append(name)
        for name in faults:
            if name not in node.faults_seen:
                node.faults_seen.append(name)

    def _update_state(self, node: NodeState) -> None:
        state = node.classify()
        if state == node.state:
            return
        previous, node.state = node.state, state
        if state == "offline":
            self.add_log("link", f"{node.label}: {STATES['offline'][0]} ({node.last_error})")
        elif state == "ok" and previous in ("alarm", "warning", "fault"):
            self.add_log("clear", f"{node.label}: {STATES['ok'][0]}")

    async def _maybe_reset(self, rtu: RtuBus, node: NodeState) -> None:
        """The fire-safety officer: once the fire is out and the room has cooled, reset."""
        if "latched" not in node.status or self.feed is None:
            return
        now = time.monotonic()
        if now - node.last_reset < RESET_COOLDOWN_S:
            return
        truth = self.feed.truth(node.address)
        if truth.get("smoke", 0.0) >= FIRE_OUT_SMOKE or truth.get("temperature", 0.0) >= \
                self._fire_out_c:
            return
        node.last_reset = now
        try:
            await rtu.write_register(node.address, 0, self.maps.commands["reset"])
        except (NoResponse, ModbusError) as exc:
            self.add_log("operator", f"{node.label}: reset failed ({exc}); will retry")
            return
        node.resets += 1
        self.add_log("operator", f"{node.label}: fire out, inspected: latched alarm reset by "
                                 f"operator / đã đặt lại")

    # -- ending ----------------------------------------------------------------------------
    def check_end(self) -> bool:
        if self.duration is not None and self.elapsed >= self.duration:
            self.end_reason = f"--duration {self.duration:g} s reached"
            return True
        player = self.feed.player if self.feed else None
        if player is not None and player.done:
            if self.done_since is None:
                self.done_since = time.monotonic()
                self.add_log("scenario", "scenario complete / kịch bản kết thúc")
            elif time.monotonic() - self.done_since >= END_GRACE_S:
                self.end_reason = "scenario complete"
                return True
        return False

    async def watch_loop(self, live: Live | None) -> None:
        while not self.stop.is_set():
            if self.check_end():
                self.stop.set()
            if live is not None:
                live.update(self.render(), refresh=True)
            else:
                self.print_plain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), RENDER_PERIOD_S)

    async def run(self) -> None:
        async with RtuBus(self.master_path, self.baud) as rtu:
            live_cm: contextlib.AbstractContextManager[Live | None]
            if self.live_view:
                live_cm = Live(self.render(), console=self.console, auto_refresh=False,
                               vertical_overflow="visible")
            else:
                live_cm = contextlib.nullcontext()
            with live_cm as live:
                poller = asyncio.create_task(self.poll_loop(rtu))
                try:
                    await self.watch_loop(live)
                finally:
                    self.stop.set()
                    try:
                        await asyncio.wait_for(asyncio.shield(poller), 1.5)
                    except (TimeoutError, asyncio.CancelledError):
                        poller.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await poller
                    if live is not None:
                        live.update(self.render(), refresh=True)
            if not self.live_view:
                self.print_plain(force=True)

    # -- rendering: terminal ---------------------------------------------------------------
    def render(self) -> RenderableType:
        return Group(self._render_header(), self._render_nodes(), self._render_events(),
                     Text("Ctrl-C to stop / Nhấn Ctrl-C để dừng", style="dim"))

    def _render_header(self) -> Panel:
        sc = self.scenario
        sim = self.sim_time
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("Scenario / Kịch bản", Text.assemble((sc.title, "bold"), f"  ({sc.name})"))
        progress = Table.grid(padding=(0, 1))
        progress.add_row(ProgressBar(total=sc.duration, completed=sim, width=40),
                         f"{sim:5.1f} s / {sc.duration:g} s   ×{self.time_scale:g}",
                         Text("complete / kết thúc", style="green")
                         if self.done_since is not None else "")
        grid.add_row("Simulated time / Thời gian", progress)
        ok = sum(n.polls_ok for n in self.nodes)
        failed = sum(n.polls_failed for n in self.nodes)
        grid.add_row("Bus / Đường truyền",
                     f"RS-485 Modbus RTU {self.baud} 8E1 · {len(self.nodes)} nodes · "
                     f"polls {ok} ok / {failed} failed")
        return Panel(grid, title="[bold]edgefleet demo[/]", title_align="left",
                     border_style="blue")

    def _render_nodes(self) -> Table:
        width = self.console.width
        wide = width >= WIDE_COLUMNS      # two readings a line
        compact = width < COMPACT_COLUMNS  # class under the address; alarms and faults merged
        table = Table(expand=wide, show_lines=True, header_style="bold")
        table.add_column("Node / Nút", justify="left" if compact else "right")
        if not compact:
            table.add_column("Class / Loại", no_wrap=True)
        table.add_column("Status / Trạng thái", min_width=10, no_wrap=not compact)
        table.add_column("Readings / Số đo", no_wrap=True)
        if compact:
            table.add_column("Alarms, faults / Báo động, lỗi")
        else:
            table.add_column("Alarms / Báo động")
            table.add_column("Faults / Lỗi")
        table.add_column("Polls / Lượt hỏi", justify="right")
        for node in self.nodes:
            cells = self._node_cells(node, per_line=2 if wide else 1)
            if compact:
                alarms, faults = cells["alarms"], cells["faults"]
                merged = alarms.copy() if alarms.plain != "-" else Text()
                if faults.plain != "-":
                    merged.append(("\n" if merged else "") + faults.plain, style=faults.style)
                table.add_row(Text(f"{node.address} ") + cells["class"], cells["status"],
                              cells["readings"], merged or Text("-", style="grey50"),
                              cells["polls"])
            else:
                table.add_row(str(node.address), cells["class"], cells["status"],
                              cells["readings"], cells["alarms"], cells["faults"],
                              cells["polls"])
        return table

    def _node_cells(self, node: NodeState, per_line: int) -> dict[str, Text]:
        label, style = STATES[node.state]
        status = Text(label, style=style)
        if "latched" in node.status and node.state != "offline":
            status.append("\nlatched / đã chốt", style="red")
        readings = format_readings(node.cls, node.cmap, node.values)
        lines = ["   ".join(readings[i:i + per_line]) for i in range(0, len(readings), per_line)]
        reading_text = Text("\n".join(lines), style="grey50" if node.state == "offline" else "")
        severity = {b.name: b.severity for b in node.cmap.alarm_bits}
        alarms = Text()
        for i, name in enumerate(node.alarms):
            alarms.append(("\n" if i else "") + name,
                          style=SEVERITY_STYLES.get(severity.get(name, ""), "red"))
        faults = Text("\n".join(node.faults), style="magenta")
        if node.state == "offline":
            faults = Text(node.last_error, style="grey50")
        polls = Text(f"{node.polls_ok} ok\n", style="green")
        polls.append(f"{node.polls_failed} failed", style="red" if node.polls_failed else "grey50")
        return {"class": Text(CLASS_LABELS[node.cls]), "status": status,
                "readings": reading_text, "alarms": alarms or Text("-", style="grey50"),
                "faults": faults or Text("-", style="grey50"), "polls": polls}

    def _render_events(self) -> Panel:
        text = Text()
        for i, line in enumerate(self.recent_log(EVENTS_SHOWN)):
            text.append(("\n" if i else "") + f"{line.sim_t:6.1f} s  ", style="dim")
            text.append(line.text, style=EVENT_STYLES.get(line.kind, ""))
        if not text:
            text = Text("waiting for the scenario / đang chờ kịch bản", style="dim")
        text.no_wrap = True            # one line per event: long ones end in an ellipsis
        text.overflow = "ellipsis"
        return Panel(text, title="Events / Sự kiện", title_align="left", border_style="blue")

    # -- rendering: plain ------------------------------------------------------------------
    def print_plain(self, force: bool = False) -> None:
        for line in self.unprinted_log():
            self.out(f"[{line.sim_t:6.1f}s] event: {line.text}")
        now = time.monotonic()
        if now - self._last_plain < (PLAIN_PERIOD_S / 2 if force else PLAIN_PERIOD_S):
            return
        self._last_plain = now
        sc = self.scenario
        self.out(f"[{self.sim_time:6.1f}s] -- {sc.name}: {self.sim_time:.0f}/{sc.duration:g} s "
                  f"simulated, {self.elapsed:.0f} s real --")
        for node in self.nodes:
            readings = ", ".join(format_readings(node.cls, node.cmap, node.values)) or "-"
            extra = []
            if node.alarms:
                extra.append("alarms: " + ",".join(node.alarms))
            if node.faults:
                extra.append("faults: " + ",".join(node.faults))
            if "latched" in node.status:
                extra.append("latched")
            self.out(f"[{self.sim_time:6.1f}s]   {node.label:<13} {STATES[node.state][0]:<21} "
                      f"{readings}" + (" | " + " | ".join(extra) if extra else ""))

    def out(self, text: str) -> None:
        print(text, file=self.console.file, flush=True)

    # -- summary ---------------------------------------------------------------------------
    def summary_lines(self) -> list[str]:
        sc = self.scenario
        lines = [f"Summary / Tóm tắt: {sc.name}, {self.sim_time:.0f} of {sc.duration:g} s "
                 f"simulated in {self.elapsed:.0f} s"
                 + (f" ({self.end_reason})" if self.end_reason else "")]
        for node in self.nodes:
            seen = f" ({', '.join(node.alarm_names_seen)})" if node.alarm_names_seen else ""
            faults = ", ".join(node.faults_seen) or "none"
            resets = f"; operator resets {node.resets}" if node.resets else ""
            resets += f"; reboots {node.reboots}" if node.reboots else ""
            lines.append(f"  {node.label:<13} polls {node.polls_ok} ok / {node.polls_failed} "
                         f"failed; alarms raised {node.alarms_raised}{seen}; "
                         f"faults seen: {faults}{resets}")
        return lines


# ----------------------------------------------------------------------------- logging
@contextlib.contextmanager
def _quiet_logs(demo: Demo) -> Iterator[None]:
    """Keep library log lines from tearing the live view; warnings go to the events panel.

    pymodbus logs every timeout as an error; the demo counts those polls itself.
    """
    root = logging.getLogger()
    pymodbus_log = logging.getLogger("pymodbus")
    saved_level = pymodbus_log.level
    if root.getEffectiveLevel() > logging.DEBUG:
        pymodbus_log.setLevel(logging.CRITICAL)
    detached: list[logging.Handler] = []
    handler: logging.Handler | None = None
    if demo.live_view:
        detached = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                    and getattr(h, "stream", None) in (sys.stderr, sys.stdout,
                                                        sys.__stderr__, sys.__stdout__)]
        for h in detached:
            root.removeHandler(h)

        class _ToEvents(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                demo.add_log("fault", f"{record.name}: {record.getMessage().splitlines()[0]}")

        handler = _ToEvents(logging.WARNING)
        root.addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            root.removeHandler(handler)
        for h in detached:
            root.addHandler(h)
        pymodbus_log.setLevel(saved_level)


# ----------------------------------------------------------------------------- entry point
def run_demo(scenario: str = "city_block", duration: float | None = None,
             baud: int = 19200) -> int:
    """Run the demo until the scenario ends (plus a few seconds), ``duration`` s, or Ctrl-C."""
    console = Console()
    err = Console(stderr=True)
    try:
        loaded = Scenario.load(find_scenario(scenario))
    except (FileNotFoundError, ScenarioError) as exc:
        err.print(f"edgefleet demo: {exc}", markup=False, highlight=False)
        return 2
    demo = Demo(loaded, load_maps(), baud, duration, console)
    if demo.live_view:
        console.print(f"Starting {len(NODES)} firmware nodes on a simulated RS-485 bus "
                      f"/ Đang khởi động các nút...", style="dim")
    else:
        demo.out(f"edgefleet demo: {loaded.name} - {loaded.title}; nodes "
                  + ", ".join(f"{a}:{c}" for a, c in NODES)
                  + f"; {baud} baud; time scale x{demo.time_scale:g}"
                  + (" (real time: rates are measured on the nodes' clocks)"
                     if demo.time_scale != loaded.time_scale else ""))
    lifeline.start()  # the nodes die with the demo, even a SIGKILLed one
    try:
        with _quiet_logs(demo), SimBus(list(NODES), baud=baud) as bus:
            feed = attach_physics(bus, str(find_scenario(scenario)),
                                  time_scale=demo.time_scale, on_event=demo.on_event)
            demo.begin(feed, bus.master_path)
            try:
                asyncio.run(demo.run())
            except KeyboardInterrupt:
                demo.interrupted = True
                demo.end_reason = "interrupted"
    except KeyboardInterrupt:
        demo.interrupted = True
        demo.end_reason = "interrupted"
    except (ScenarioError, SimError, ConnectionError) as exc:
        err.print(f"edgefleet demo: {exc}", markup=False, highlight=False)
        return 1
    finally:
        lifeline.stop()
    lines = demo.summary_lines()
    if demo.live_view:
        console.print(lines[0], style="bold", markup=False, highlight=False)
        for line in lines[1:]:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    else:
        for line in lines:
            demo.out(line)
    return 0
