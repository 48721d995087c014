"""Serial line-protocol inputs: a fire panel's event printer port, read as events.

A fire alarm control panel prints one ASCII line per event on its printer port (RS-232). What a
line looks like is panel-specific, so it is *data*: a profile in ``gateway/profiles/*.toml`` lists
regular expressions with named groups (``zone``, ``point``, ``text``, ``ts`` or ``date`` +
``time``), each mapped to an event kind, plus the encoding, line terminator and timestamp format.

:class:`LineParser` is the pure core: bytes in (any chunking), :class:`PanelEvent` out. It never
raises on input: undecodable bytes, control characters, over-long lines and lines no pattern
matches come out as ``kind == "unparsed"`` events and are counted, because a line the gateway does
not understand may still be a fire and must reach an operator. :func:`read_serial_lines` is the
thin I/O adapter around pyserial-asyncio.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hardware.serialline import allow_parity_on_ptys

__all__ = [
    "PROFILES_DIR",
    "EventKind",
    "LineParser",
    "PanelEvent",
    "ParserStats",
    "Profile",
    "ProfileError",
    "available_profiles",
    "load_profile",
    "read_serial_lines",
]

log = logging.getLogger(__name__)

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"

EventKind = Literal["fire", "prealarm", "supervisory", "fault", "restore", "reset", "silence",
                    "ack", "info", "unparsed"]
#: Kinds a profile pattern may produce (``unparsed`` is the parser's own).
PatternKind = Literal["fire", "prealarm", "supervisory", "fault", "restore", "reset", "silence",
                      "ack", "info"]
Severity = Literal["critical", "major", "minor", "warning"]
Action = Literal["raised", "cleared", "cleared_all", "info", "unparsed"]

_RAISING: dict[str, Severity] = {
    "fire": "critical", "supervisory": "major", "fault": "major", "prealarm": "warning",
}
_ACTIONS: dict[str, Action] = {
    **dict.fromkeys(_RAISING, "raised"),
    "restore": "cleared", "reset": "cleared_all",
    "silence": "info", "ack": "info", "info": "info", "unparsed": "unparsed",
}
_TERMINATORS = {"auto": None, "crlf": b"\r\n", "lf": b"\n", "cr": b"\r"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")
_AMPM = re.compile(r"(?<=\d)([AaPp])(?=\s|$)")


class ProfileError(ValueError):
    """A line-protocol profile is missing or malformed; the message names the file and entry."""


class Pattern(BaseModel):
    """One line shape: the first pattern whose regex matches a line decides its event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: PatternKind
    regex: str
    severity: Severity | None = None  # for raising kinds; default from the kind
    clears: PatternKind | None = None  # for ``restore``: which kind it ends (None: any)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Pattern:
        if self.clears is not None and self.kind != "restore":
            raise ValueError("'clears' only applies to kind = \"restore\"")
        if self.severity is not None and self.kind not in _RAISING:
            raise ValueError(f"'severity' only applies to {', '.join(_RAISING)}")
        return self


class Profile(BaseModel):
    """A panel's printer-port dialect, loaded from TOML (see ``gateway/profiles/generic.toml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    encoding: str = "ascii"
    terminator: Literal["auto", "crlf", "lf", "cr"] = "auto"
    timestamp_format: str | None = None  # strptime; applied to ``ts`` or "<date> <time>"
    ignore_case: bool = False
    max_line: Annotated[int, Field(ge=16, le=65536)] = 512
    strip_chars: str = "\x00\x0c"  # NUL padding and form feeds printers emit between pages
    ignore: tuple[str, ...] = (r"^\s*$",)  # banners and separators: skipped, not "unparsed"
    pattern: Annotated[tuple[Pattern, ...], Field(min_length=1)]

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            "".encode(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @field_validator("ignore")
    @classmethod
    def _ignore_compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for regex in value:
            try:
                re.compile(regex)
            except re.error as exc:
                raise ValueError(f"{regex!r} is not a valid regular expression: {exc}") from None
        return value

    @cached_property
    def compiled(self) -> tuple[tuple[re.Pattern[str], Pattern], ...]:
        flags = re.IGNORECASE if self.ignore_case else 0
        return tuple((re.compile(p.regex, flags), p) for p in self.pattern)

    @cached_property
    def compiled_ignore(self) -> tuple[re.Pattern[str], ...]:
        flags = re.IGNORECASE if self.ignore_case else 0
        return tuple(re.compile(regex, flags) for regex in self.ignore)


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``gateway/profiles``."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def _profile_path(name_or_path: str, base_dir: Path | None) -> Path:
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return path
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name_or_path):
        raise ProfileError(f"{name_or_path!r} is neither a profile name nor a .toml path")
    path = PROFILES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ProfileError(f"unknown profile {name_or_path!r}; shipped profiles: "
                           f"{', '.join(available_profiles())} (or give a path to a .toml file)")
    return path


def load_profile(name_or_path: str, base_dir: Path | None = None) -> Profile:
    """A shipped profile by name (``generic``) or a TOML file (relative to ``base_dir``)."""
    path = _profile_path(name_or_path, base_dir)
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: {exc}") from None
    try:
        return Profile.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise ProfileError(f"{path}: {where.lstrip('.')}: {first['msg']}") from None


@dataclass(frozen=True)
class PanelEvent:
    """One line of the panel, understood (or not: ``kind == "unparsed"``)."""

    kind: EventKind
    zone: str | None
    point: str | None
    text: str
    panel_time: datetime | None  # the panel's own clock: often wrong, never authoritative
    raw: str  # the line as decoded (undecodable bytes as U+FFFD), without its terminator
    severity: Severity | None = None  # for raised alarms and faults
    clears: PatternKind | None = None  # for restores: the kind ended, or None for "any"

    @property
    def action(self) -> Action:
        """What this does to the panel's alarm state: raised, cleared, cleared_all, info."""
        return _ACTIONS[self.kind]

    @property
    def key(self) -> str:
        """Identifies the condition at one place, e.g. ``fire:03:012``, for stable alarm ids."""
        return f"{self.kind}:{self.zone or '-'}:{self.point or '-'}"


@dataclass
class ParserStats:
    lines: int = 0  # every terminated line (and over-long fragments), blank ones included
    events: int = 0  # lines matched by a pattern
    ignored: int = 0  # blank lines and the profile's ``ignore`` patterns
    unparsed: int = 0  # no pattern matched, or the line was garbage
    undecodable: int = 0  # of the unparsed: bad bytes for the encoding or control characters
    overlong: int = 0  # of the unparsed: longer than ``max_line`` (cut)
    bad_timestamps: int = 0  # matched, but the panel time did not parse (event still emitted)


@dataclass
class LineParser:
    """Incremental: ``feed`` any chunk of bytes, get the events of the lines it completed."""

    profile: Profile
    tz: tzinfo | None = None  # the panel clock's zone; None leaves panel_time naive
    stats: ParserStats = field(default_factory=ParserStats)
    _buffer: bytearray = field(default_factory=bytearray, repr=False)

    def feed(self, data: bytes) -> list[PanelEvent]:
        events: list[PanelEvent] = []
        terminator = _TERMINATORS[self.profile.terminator]
        if terminator is None:
            self._feed_auto(data, events)
        else:
            self._buffer += data
            while (end := self._buffer.find(terminator)) >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + len(terminator)]
                self._line(line, events)
        self._cut_overlong(events)
        return events

    def flush(self) -> list[PanelEvent]:
        """The last line, unterminated (at end of input)."""
        events: list[PanelEvent] = []
        if self._buffer:
            line = bytes(self._buffer)
            self._buffer.clear()
            self._line(line, events)
        return events

    def _feed_auto(self, data: bytes, events: list[PanelEvent]) -> None:
        # CR, LF, CRLF and LFCR all end a line. The second byte of a pair ends an empty line,
        # which is skipped without being counted, so a pair split across chunks needs no state.
        start = 0
        for index, byte in enumerate(data):
            if byte in (0x0A, 0x0D):
                if index > start or self._buffer:
                    self._buffer += data[start:index]
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    self._line(line, events)
                start = index + 1
        self._buffer += data[start:]

    def _cut_overlong(self, events: list[PanelEvent]) -> None:
        limit = self.profile.max_line
        while len(self._buffer) > limit:
            line = bytes(self._buffer[:limit])
            del self._buffer[:limit]
            self.stats.overlong += 1
            self._line(line, events, garbage=True)

    def _line(self, line: bytes, events: list[PanelEvent], garbage: bool = False) -> None:
        profile = self.profile
        self.stats.lines += 1
        try:
            text = line.decode(profile.encoding)
        except UnicodeDecodeError:
            text = line.decode(profile.encoding, errors="replace")
            garbage = True
        text = text.strip(profile.strip_chars).rstrip()
        if not garbage and any(rx.search(text) for rx in profile.compiled_ignore):
            self.stats.ignored += 1
            return
        if not garbage and _CONTROL.search(text):
            garbage = True
        if not garbage:
            # A corrupted line is never matched: a flipped bit in a zone number would raise the
            # alarm in the wrong place. It goes to the operator as text instead.
            for regex, pattern in profile.compiled:
                match = regex.match(text)
                if match is not None:
                    self.stats.events += 1
                    events.append(self._event(pattern, match, text))
                    return
        else:
            self.stats.undecodable += 1
        self.stats.unparsed += 1
        events.append(PanelEvent("unparsed", None, None, text, None, text))

    def _event(self, pattern: Pattern, match: re.Match[str], text: str) -> PanelEvent:
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        severity = pattern.severity or _RAISING.get(pattern.kind)
        return PanelEvent(
            kind=pattern.kind,
            zone=groups.get("zone"),
            point=groups.get("point"),
            text=" ".join(groups.get("text", text).split()),
            panel_time=self._panel_time(groups),
            raw=text,
            severity=severity,
            clears=pattern.clears,
        )

    def _panel_time(self, groups: dict[str, str]) -> datetime | None:
        fmt = self.profile.timestamp_format
        if fmt is None:
            return None
        if "ts" in groups:
            stamp = groups["ts"]
        elif "date" in groups and "time" in groups:
            stamp = f"{groups['date']} {groups['time']}"
        else:
            return None
        stamp = _AMPM.sub(r"\1M", stamp)  # "02:03P": printers abbreviate AM/PM to one letter
        try:
            when = datetime.strptime(stamp, fmt)
        except ValueError:
            self.stats.bad_timestamps += 1
            return None
        return when.replace(tzinfo=self.tz) if self.tz is not None else when


async def read_serial_lines(
    port: str,
    baudrate: int,
    parity: str,
    parser: LineParser,
    on_event: Callable[[PanelEvent], object],
    *,
    bytesize: int = 8,
    stopbits: int = 1,
    on_open: Callable[[], object] | None = None,
) -> None:
    """Read a panel's printer port until cancelled; every event goes to ``on_event``.

    ``on_event`` may be a plain function or a coroutine function (awaited in order, so a slow
    consumer applies back-pressure to the port). Serial errors (a port unplugged) propagate: the
    service supervises and re-opens. The port is closed on cancellation or error. ``on_open`` is
    called once the port is open and configured (health reporting, tests).
    """
    import serial_asyncio  # no stubs; only the adapter needs it

    allow_parity_on_ptys()
    reader, writer = await serial_asyncio.open_serial_connection(
        url=port, baudrate=baudrate, parity=parity, bytesize=bytesize, stopbits=stopbits)
    if on_open is not None:
        on_open()
    log.info("reading panel events from %s at %d baud, profile %s", port, baudrate,
             parser.profile.name)
    try:
        while True:
            chunk: bytes = await reader.read(1024)
            events = parser.feed(chunk) if chunk else parser.flush()
            for event in events:
                if event.kind == "unparsed":
                    log.warning("unparsed panel line on %s: %r", port, event.raw)
                result = on_event(event)
                if inspect.isawaitable(result):
                    await result
            if not chunk:
                log.warning("panel port %s closed", port)
                return
    finally:
        writer.close()
        # let the transport close the port before a supervisor re-opens it
        await asyncio.sleep(0)
