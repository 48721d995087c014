"""A fire panel's printer port, read line by line: byte vectors per profile and a real pty."""

from __future__ import annotations

import asyncio
import os
import tty
from datetime import datetime
from pathlib import Path

import pytest

from gateway.lineproto import (
    LineParser,
    PanelEvent,
    ProfileError,
    available_profiles,
    load_profile,
    read_serial_lines,
)

GENERIC = (
    b"12/11/26 14:03:27 FIRE   ZONE 03 DET 012 3RD FLOOR CORRIDOR\r\n"
    b"12/11/26 14:03:40 PREALM ZONE 03 DET 013 3RD FLOOR STORE\r\n"
    b"12/11/26 14:04:02 SILENCE BY OPERATOR\r\n"
    b"12/11/26 14:05:10 FAULT  ZONE 05 DET 002 OPEN CIRCUIT\r\n"
    b"12/11/26 14:05:40 FAULT  MAINS FAILURE\r\n"
    b"------------------------------------\r\n"
    b"12/11/26 14:09:55 RESTORE ZONE 05 DET 002\r\n"
    b"12/11/26 14:10:00 RESET  PANEL\r\n"
)

NOTIFIER = (
    b"FIRE ALARM  SMOKE(PHOTO)  3RD FLOOR CORRIDOR            Z003  02:03P 111226 1D012\r\n"
    b"ACKNOWLEDGE                                                   02:04P 111226\r\n"
    b"SIGNALS SILENCED                                              02:04P 111226\r\n"
    b"TROUBL      SMOKE(PHOTO)  5TH FLOOR LOBBY   OPEN CIRCUIT Z005  02:05P 111226 1D002\r\n"
    b"CLR TBL     SMOKE(PHOTO)  5TH FLOOR LOBBY               Z005  02:09P 111226 1D002\r\n"
    b"SYSTEM RESET                                                  02:10P 111226\r\n"
)


def summary(events: list[PanelEvent]) -> list[tuple[str, str | None, str | None, str]]:
    return [(e.kind, e.zone, e.point, e.text) for e in events]


def test_both_profiles_ship_and_load() -> None:
    assert {"generic", "notifier"} <= set(available_profiles())
    for name in available_profiles():
        assert load_profile(name).name == name


def test_generic_panel_fire_fault_restore_reset() -> None:
    parser = LineParser(load_profile("generic"))
    events = parser.feed(GENERIC)
    assert summary(events) == [
        ("fire", "03", "012", "3RD FLOOR CORRIDOR"),
        ("prealarm", "03", "013", "3RD FLOOR STORE"),
        ("silence", None, None, "BY OPERATOR"),
        ("fault", "05", "002", "OPEN CIRCUIT"),
        ("fault", None, None, "MAINS FAILURE"),
        ("restore", "05", "002", ""),
        ("reset", None, None, "PANEL"),
    ]
    fire = events[0]
    assert (fire.action, fire.severity, fire.key) == ("raised", "critical", "fire:03:012")
    assert fire.panel_time == datetime(2026, 11, 12, 14, 3, 27)
    assert fire.raw == "12/11/26 14:03:27 FIRE   ZONE 03 DET 012 3RD FLOOR CORRIDOR"
    assert [e.action for e in events] == ["raised", "raised", "info", "raised", "raised",
                                          "cleared", "cleared_all"]
    assert events[1].severity == "warning" and events[3].severity == "major"
    assert (parser.stats.lines, parser.stats.events, parser.stats.ignored,
            parser.stats.unparsed) == (8, 7, 1, 0)


def test_notifier_style_printout() -> None:
    events = LineParser(load_profile("notifier")).feed(NOTIFIER)
    assert summary(events) == [
        ("fire", "003", "1D012", "SMOKE(PHOTO) 3RD FLOOR CORRIDOR"),
        ("ack", None, None, "ACKNOWLEDGE"),
        ("silence", None, None, "SIGNALS SILENCED"),
        ("fault", "005", "1D002", "SMOKE(PHOTO) 5TH FLOOR LOBBY OPEN CIRCUIT"),
        ("restore", "005", "1D002", "SMOKE(PHOTO) 5TH FLOOR LOBBY"),
        ("reset", None, None, "SYSTEM RESET"),
    ]
    assert events[0].panel_time == datetime(2026, 11, 12, 14, 3)  # 02:03P, MMDDYY
    assert events[4].clears == "fault"


@pytest.mark.parametrize("profile,data", [("generic", GENERIC), ("notifier", NOTIFIER)])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_any_chunking_gives_the_same_events(profile: str, data: bytes, size: int) -> None:
    whole = LineParser(load_profile(profile)).feed(data)
    parser = LineParser(load_profile(profile))
    pieces: list[PanelEvent] = []
    for start in range(0, len(data), size):
        pieces += parser.feed(data[start:start + size])
    assert pieces == whole


@pytest.mark.parametrize("ending", [b"\r\n", b"\n", b"\r", b"\n\r"])
def test_cr_lf_variants(ending: bytes) -> None:
    data = GENERIC.replace(b"\r\n", ending)
    parser = LineParser(load_profile("generic"))
    assert summary(parser.feed(data)) == summary(LineParser(load_profile("generic")).feed(GENERIC))
    assert parser.stats.unparsed == 0


def test_an_unterminated_last_line_waits_for_flush() -> None:
    parser = LineParser(load_profile("generic"))
    assert parser.feed(b"12/11/26 14:10:00 RESET  PANEL") == []
    assert [e.kind for e in parser.flush()] == ["reset"]
    assert parser.flush() == []


def test_garbage_is_reported_as_unparsed_and_never_raises() -> None:
    parser = LineParser(load_profile("generic"))
    noise = bytes(range(256)) * 3
    events = parser.feed(b"\xff\xfe\x00garbage\r\n" + noise + b"\n" + GENERIC)
    unparsed = [e for e in events if e.kind == "unparsed"]
    assert unparsed and all(e.action == "unparsed" for e in unparsed)
    assert [e.kind for e in events if e.kind != "unparsed"][:1] == ["fire"]
    assert parser.stats.undecodable >= 1 and parser.stats.unparsed == len(unparsed)


def test_a_corrupted_fire_line_is_not_guessed_at() -> None:
    # a flipped bit in the zone number must not raise the alarm in another zone
    events = LineParser(load_profile("generic")).feed(
        b"12/11/26 14:03:27 FIRE   ZONE 0\xb3 DET 012 3RD FLOOR\r\n")
    assert [(e.kind, e.text) for e in events] == [
        ("unparsed", "12/11/26 14:03:27 FIRE   ZONE 0\ufffd DET 012 3RD FLOOR")]


def test_a_line_no_pattern_knows_reaches_the_operator() -> None:
    parser = LineParser(load_profile("generic"))
    [event] = parser.feed(b"12/11/26 14:03:27 DISCHARGE ZONE 09\n")
    assert (event.kind, event.raw) == ("unparsed", "12/11/26 14:03:27 DISCHARGE ZONE 09")
    assert parser.stats.undecodable == 0


def test_an_endless_line_is_cut_at_max_line() -> None:
    parser = LineParser(load_profile("generic"))
    events = parser.feed(b"A" * 1000)
    assert [len(e.raw) for e in events] == [256, 256, 256]
    assert parser.stats.overlong == 3
    assert [e.kind for e in parser.feed(b"\n" + GENERIC)][-1] == "reset"


def test_an_impossible_panel_date_keeps_the_event() -> None:
    parser = LineParser(load_profile("generic"))
    [event] = parser.feed(b"31/02/26 14:03:27 FIRE   ZONE 03 DET 012 X\n")
    assert event.kind == "fire" and event.panel_time is None
    assert parser.stats.bad_timestamps == 1


def test_a_site_profile_from_a_path(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(
        'name = "mine"\nterminator = "lf"\n'
        '[[pattern]]\nkind = "fire"\nregex = \'^ALARM Z(?P<zone>\\d+)\'\n')
    parser = LineParser(load_profile("mine.toml", tmp_path))
    assert summary(parser.feed(b"ALARM Z7\r\nALARM Z8\n")) == [
        ("fire", "7", None, "ALARM Z7"), ("fire", "8", None, "ALARM Z8")]


@pytest.mark.parametrize("text,message", [
    ('name = "x"\n[[pattern]]\nkind = "fire"\nregex = "(unclosed"\n',
     "pattern[0].regex: Value error, not a valid regular expression"),
    ('name = "x"\n[[pattern]]\nkind = "flame"\nregex = "x"\n', "pattern[0].kind: Input should"),
    ('name = "x"\nencoding = "ebcdic-9"\n[[pattern]]\nkind = "fire"\nregex = "x"\n',
     "encoding: Value error, unknown encoding 'ebcdic-9'"),
])
def test_a_broken_profile_is_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ProfileError, match=r"bad\.toml: ") as caught:
        load_profile(str(tmp_path / "bad.toml"))
    assert message in str(caught.value)


def test_panel_events_arrive_over_a_real_serial_port() -> None:
    """The printer port as a pty: 9600 7E1-style settings, bytes trickling in odd chunks."""
    master, slave = os.openpty()
    tty.setraw(master)
    port = os.ttyname(slave)
    received: list[PanelEvent] = []

    async def scenario() -> None:
        done, opened = asyncio.Event(), asyncio.Event()

        async def on_event(event: PanelEvent) -> None:
            received.append(event)
            if event.kind == "reset":
                done.set()

        parser = LineParser(load_profile("generic"))
        reader = asyncio.create_task(read_serial_lines(port, 9600, "E", parser, on_event,
                                                       on_open=opened.set))
        await asyncio.wait_for(opened.wait(), 5)
        first = GENERIC.index(b"\n") + 1
        data = GENERIC[:first] + b"\xff\x00noise\r\n" + GENERIC[first:]
        for start in range(0, len(data), 37):
            os.write(master, data[start:start + 37])
            await asyncio.sleep(0.005)
        await asyncio.wait_for(done.wait(), 5)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader

    try:
        asyncio.run(scenario())
    finally:
        os.close(master)
        os.close(slave)
    kinds = [e.kind for e in received]
    assert kinds == ["fire", "unparsed", "prealarm", "silence", "fault", "fault", "restore",
                     "reset"]
    assert received[0].zone == "03" and received[1].raw == "\ufffd\x00noise"
