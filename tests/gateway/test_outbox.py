"""The outbox against real SQLite files: seq, delivery, crashes, the disk bound, full and corrupt
disks. What a fleet operator relies on: after any failure, each device's seq runs on with no gap,
and any gap that does appear was a counted policy drop."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.outbox import (
    Message,
    Outbox,
    OutboxCorrupt,
    OutboxFull,
    Stored,
    plan_drops,
    seq_runs,
)

REPO = Path(__file__).resolve().parents[2]
GW = "edgefleet/v1/gw-test"


def telemetry(device: str, n: int = 0, pad: int = 0) -> Message:
    body = {"v": 1, "device": device, "values": {"t": 20 + n}, "pad": "x" * pad}
    return Message(f"{GW}/{device}/telemetry", body, "telemetry", device=device)


def alarm(device: str, n: int = 0) -> Message:
    body = {"v": 1, "device": device, "alarm_id": f"a{n}", "state": "raised"}
    return Message(f"{GW}/{device}/alarm", body, "alarm", device=device)


def state(device: str, online: bool = True) -> Message:
    body = {"v": 1, "device": device, "online": online}
    return Message(f"{GW}/{device}/state", body, "state", device=device, retain=True)


def body(stored: Stored) -> dict[str, object]:
    decoded: dict[str, object] = json.loads(stored.payload)
    return decoded


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


# -- seq -----------------------------------------------------------------------------------------

def test_each_device_counts_its_own_seq_across_telemetry_alarm_and_state(db: Path) -> None:
    with Outbox(db) as outbox:
        out = [outbox.put(telemetry("fire-1")), outbox.put(alarm("fire-1")),
               outbox.put(telemetry("flood-2")), outbox.put(state("fire-1")),
               *outbox.put_many([telemetry("flood-2"), telemetry("fire-1"), alarm("flood-2")])]
        seqs = defaultdict(list)
        for s in out:
            assert s.device is not None
            seqs[s.device].append(s.seq)
            assert body(s)["seq"] == s.seq
        assert seqs == {"fire-1": [1, 2, 3, 4], "flood-2": [1, 2, 3]}
        assert outbox.next_seq("fire-1") == 5
        assert outbox.next_seq("never-seen") == 1


def test_seq_survives_a_restart(db: Path) -> None:
    with Outbox(db) as outbox:
        outbox.put_many([telemetry("fire-1", i) for i in range(5)])
        outbox.ack(m.id for m in outbox.peek(10))  # an empty queue must not reset the counter
    with Outbox(db) as outbox:
        assert outbox.next_seq("fire-1") == 6
        assert outbox.put(alarm("fire-1")).seq == 6


def test_gateway_messages_carry_no_seq_and_payload_is_compact_utf8_json(db: Path) -> None:
    with Outbox(db) as outbox:
        status = outbox.put(Message(f"{GW}/status", {"v": 1, "online": True, "où": "salle 3"},
                                    "status", retain=True))
        assert status.seq is None and status.device is None and status.retain
        assert status.payload == '{"v":1,"online":true,"où":"salle 3"}'.encode()


def test_a_bad_message_stores_nothing_of_its_batch_and_consumes_no_seq(db: Path) -> None:
    with Outbox(db) as outbox:
        bad = Message(f"{GW}/fire-1/telemetry", {"values": {"t": float("nan")}}, "telemetry",
                      device="fire-1")
        with pytest.raises(ValueError):
            outbox.put_many([telemetry("fire-1"), bad])
        with pytest.raises(ValueError, match="kind"):
            outbox.put(Message("t", {}, "gossip"))
        assert outbox.stats().depth == 0
        assert outbox.put(telemetry("fire-1")).seq == 1


# -- delivery ------------------------------------------------------------------------------------

def test_publisher_sees_oldest_first_and_ack_removes_only_what_was_delivered(db: Path) -> None:
    with Outbox(db) as outbox:
        stored = outbox.put_many([telemetry(f"d{i % 3}", i) for i in range(10)])
        first = outbox.peek(4)
        assert first == stored[:4]
        assert outbox.peek(4, after_id=first[-1].id) == stored[4:8]  # in flight: read past
        outbox.ack([first[1].id, first[3].id])
        outbox.ack([first[1].id])  # a duplicate PUBACK is harmless
        assert [m.id for m in outbox.peek(100)] == [s.id for s in stored
                                                    if s not in (first[1], first[3])]
        stats = outbox.stats()
        assert stats.depth == 8
        assert stats.bytes == sum(len(s.payload) for s in outbox.peek(100))
        outbox.ack(m.id for m in outbox.peek(100))
        assert outbox.stats().depth == 0 and outbox.stats().bytes == 0
        # ids are never reused, so a publisher's after_id stays valid on an emptied queue
        assert outbox.put(telemetry("d0")).id > stored[-1].id


def test_acks_in_runs_or_scattered_delete_exactly_what_was_delivered(db: Path) -> None:
    """The publisher's acks come in runs of consecutive ids (deleted by range) or scattered
    after refusals and rewinds (deleted id by id): either way nothing else goes."""
    with Outbox(db) as outbox:
        stored = outbox.put_many([telemetry(f"d{i % 3}", i) for i in range(60)])
        ids = [s.id for s in stored]
        runs = ids[0:5] + ids[7:8] + ids[9:20]  # three runs, one of one id
        scattered = ids[21:60:2]  # twenty runs of one: the scattered path
        outbox.ack(reversed(runs))
        outbox.ack(scattered + scattered[:3])
        gone = set(runs) | set(scattered)
        left = outbox.peek(100)
        assert [m.id for m in left] == [i for i in ids if i not in gone]
        assert outbox.stats().depth == len(left)
        assert outbox.stats().bytes == sum(len(m.payload) for m in left)


def test_broker_refusal_is_dead_lettered_with_its_reason_code_and_counted(db: Path) -> None:
    with Outbox(db) as outbox:
        refused, kept = outbox.put_many([alarm("fire-1"), telemetry("fire-1")])
        outbox.dead_letter(refused.id, "not authorised", 135)
        outbox.dead_letter(refused.id, "again", 135)  # already moved: ignored, not re-counted
        assert outbox.peek(10) == [kept]
        [letter] = outbox.dead_letters()
        assert (letter.id, letter.seq, letter.code, letter.reason) == (refused.id, 1, 135,
                                                                        "not authorised")
        assert letter.payload == refused.payload
        assert outbox.stats().dead_letters == 1
    with Outbox(db) as outbox:
        assert outbox.stats().dead_letters == 1
        assert outbox.stats().depth == 1


# -- crash safety --------------------------------------------------------------------------------

PRODUCER = textwrap.dedent("""
    import os
    import sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from gateway.outbox import Message, Outbox
    outbox = Outbox(Path({db!r}))
    n = 0
    while True:
        n += 1
        if n % 3:
            msgs = [Message("t", {{"n": n, "i": i}}, "telemetry", device=f"d{{i % 2}}")
                    for i in range(7)]
            stored = outbox.put_many(msgs)
        else:
            stored = [outbox.put(Message("a", {{"n": n}}, "alarm", device="d0"))]
        # printed only after the commit returned: each line is a promise
        print(" ".join(f"{{s.device}}:{{s.seq}}" for s in stored), flush=True)
""")


def run_producer_and_kill(db: Path, lines_before_kill: int) -> list[tuple[str, int]]:
    code = PRODUCER.format(repo=str(REPO), db=str(db))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    promised: list[tuple[str, int]] = []
    try:
        for _ in range(lines_before_kill):
            line = proc.stdout.readline()
            assert line, "producer died before it was killed"
            promised += [(d, int(s)) for d, s in (w.split(":") for w in line.split())]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # lines written between our last read and the kill were committed too; a line without its
    # newline was cut short by the kill and promises nothing
    for line in proc.stdout.read().splitlines(keepends=True):
        if line.endswith("\n"):
            promised += [(d, int(s)) for d, s in (w.split(":") for w in line.split())]
    assert proc.returncode == -signal.SIGKILL
    return promised


def test_sigkill_mid_stream_loses_nothing_committed_and_seq_runs_on_without_gaps(
        db: Path) -> None:
    promised: list[tuple[str, int]] = []
    for lines in (150, 40, 300, 7, 90, 1, 220, 60):  # eight crashes against the same file
        promised += run_producer_and_kill(db, lines)
    with Outbox(db) as outbox:
        rows = outbox.peek(1_000_000)
        assert outbox.stats().depth == len(rows)
        stored = [(m.device, m.seq) for m in rows]
        assert len(stored) == len(set(stored)), "a message was stored twice"
        assert set(promised) <= set(stored), "a committed message was lost"
        for device in ("d0", "d1"):
            seqs = [s for d, s in stored if d == device]
            assert seqs == list(range(1, len(seqs) + 1)), f"{device}: seq gap or disorder"
            assert outbox.next_seq(device) == len(seqs) + 1
            assert outbox.put(telemetry(device)).seq == len(seqs) + 1


# -- the disk bound ------------------------------------------------------------------------------

def test_over_the_disk_bound_the_oldest_telemetry_goes_and_every_alarm_stays(
        db: Path, caplog: pytest.LogCaptureFixture) -> None:
    limit = 5000  # room for the 40 alarms (~90 B each with epoch and seq) and some telemetry
    stored: list[Stored] = []
    with Outbox(db, max_bytes=limit) as outbox, caplog.at_level(logging.WARNING):
        for i in range(200):
            device = f"d{i % 3}"
            msg = alarm(device, i) if i % 5 == 0 else telemetry(device, i, pad=i % 40)
            stored += outbox.put_many([msg])
            if any(m.kind == "telemetry" for m in outbox.peek(1000)):  # while any can go
                assert outbox.stats().bytes <= limit  # declarations included
        queued = outbox.peek(1000)
        remaining = [m for m in queued if m.kind != "drops"]
        gone = [s for s in stored if s not in remaining]
        assert gone and all(s.kind == "telemetry" for s in gone)  # every alarm stays
        kept_telemetry = [m for m in remaining if m.kind == "telemetry"]
        assert kept_telemetry and max(s.id for s in gone) < min(m.id for m in kept_telemetry)
        expected_dropped: dict[str, int] = defaultdict(int)
        for s in gone:
            assert s.device is not None
            expected_dropped[s.device] += 1
        stats = outbox.stats()
        assert stats.bytes == sum(len(m.payload) for m in queued)
        assert stats.dropped_telemetry == len(gone)
        assert stats.dropped_by_device == expected_dropped
        # one declaration per device, naming exactly the seqs that went
        declared = {body(m)["device"]: body(m)["ranges"] for m in queued if m.kind == "drops"}
        assert declared == {d: seq_runs(s.seq for s in gone if s.device == d and s.seq)
                            for d in expected_dropped}
    assert "dropped the 1 oldest telemetry" in caplog.text
    with Outbox(db, max_bytes=limit) as outbox:  # the counters are persisted
        assert outbox.stats().dropped_telemetry == len(gone)


def test_a_consumer_can_tell_policy_drops_from_losses_by_the_drop_ranges(db: Path) -> None:
    with Outbox(db, max_bytes=1200) as outbox:
        stored = [outbox.put(alarm("d0", i) if i % 4 == 0 else telemetry("d0", i))
                  for i in range(60)]
        delivered = {m.seq for m in outbox.peek(1000)}
        missing = {s.seq for s in stored} - delivered
        [drops] = outbox.drop_ranges("d0")  # no delivery in between: one range for the outage
        assert drops.count == len(missing) == outbox.stats().dropped_by_device["d0"]
        assert missing <= set(range(drops.first_seq, drops.last_seq + 1))

        outbox.ack(m.id for m in outbox.peek(1000))  # the broker is back: delivered...
        for i in range(60):  # ...and a second outage opens a second range
            outbox.put(telemetry("d0", i))
        first, second = outbox.drop_ranges("d0")
        assert first == drops
        assert second.first_seq > first.last_seq


def test_one_delivery_acked_as_a_run_closes_the_devices_drop_range(db: Path) -> None:
    """The publisher acks runs of consecutive ids by range: a delivery that way must close the
    device's open drop range as the scattered path does, or the next outage's drops would be
    folded into the old range and a consumer could not tell them from a loss."""
    with Outbox(db, max_bytes=1200) as outbox:
        for i in range(60):
            outbox.put(alarm("d0", i) if i % 4 == 0 else telemetry("d0", i))
        [drops] = outbox.drop_ranges("d0")
        oldest = next(m for m in outbox.peek(1000) if m.kind != "drops")
        outbox.ack([oldest.id])  # one run of one id: the range path
        for i in range(60, 120):
            outbox.put(telemetry("d0", i))
        first, second = outbox.drop_ranges("d0")
        assert first == drops
        assert second.first_seq > first.last_seq


def test_when_only_alarms_fill_the_bound_they_are_kept_and_an_error_is_logged_once(
        db: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Outbox(db, max_bytes=500) as outbox, caplog.at_level(logging.ERROR):
        for i in range(30):
            outbox.put(alarm("fire-1", i))
        assert outbox.stats().depth == 30
        assert outbox.stats().bytes > 500
        assert outbox.stats().dropped_telemetry == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "never dropped" in errors[0].getMessage()


def test_plan_drops_takes_the_oldest_until_enough_is_freed() -> None:
    assert plan_drops([(1, 10), (2, 10), (3, 10)], 15) == [1, 2]
    assert plan_drops([(1, 10), (2, 10)], 100) == [1, 2]
    assert plan_drops([(1, 10)], 0) == []


# -- full and corrupt disks ----------------------------------------------------------------------

def fill_page_limit(outbox: Outbox, pages: int) -> None:
    """A real SQLite limit: the file may not grow past `pages` pages, as on a full disk."""
    outbox._db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_raises_outbox_full_naming_the_file_and_keeps_what_was_stored(
        db: Path) -> None:
    with Outbox(db) as outbox:
        fill_page_limit(outbox, 30)
        stored: list[Stored] = []
        with pytest.raises(OutboxFull) as excinfo:
            for i in range(10_000):
                stored.append(outbox.put(alarm("fire-1", i)))
        assert isinstance(excinfo.value, OSError)
        assert str(db) in str(excinfo.value)
        assert len(stored) > 10
        assert outbox.peek(100_000) == stored
        assert outbox.next_seq("fire-1") == len(stored) + 1  # the failed put consumed no seq
        delivered = len(stored) // 2  # whole b-tree pages free up (a row or two may not)
        outbox.ack(s.id for s in stored[:delivered])
        assert outbox.put(alarm("fire-1")).seq == len(stored) + 1  # room again: no gap
    with Outbox(db) as outbox:
        assert [m.seq for m in outbox.peek(100_000)] == list(range(delivered + 1,
                                                                   len(stored) + 2))


def test_on_a_full_disk_the_oldest_telemetry_makes_room_for_new_messages(db: Path) -> None:
    with Outbox(db) as outbox:
        fill_page_limit(outbox, 40)
        for i in range(10_000):  # telemetry until the disk is full: no error, the oldest goes
            outbox.put(telemetry("d0", i, pad=200))
            if outbox.stats().dropped_telemetry:
                break
        else:
            pytest.fail("the page limit was never reached")
        for i in range(20):  # alarms still get in, at the expense of the oldest telemetry
            outbox.put(alarm("d1", i))
        queued = outbox.peek(100_000)
        assert [m.seq for m in queued if m.device == "d1"] == list(range(1, 21))
        d0 = [m.seq for m in queued if m.device == "d0" and m.kind == "telemetry"]
        assert d0 == list(range(d0[0], outbox.next_seq("d0")))  # only the oldest went
        assert outbox.stats().dropped_by_device == {"d0": d0[0] - 1}
        [declared] = [body(m) for m in queued if m.kind == "drops"]  # and said so
        assert declared["ranges"] == [[1, d0[0] - 1]] and declared["reason"] == "disk_full"


def test_a_corrupt_file_is_reported_by_name_at_open(db: Path) -> None:
    db.write_bytes(b"this is not a database, it is what a dying SD card returns\n" * 200)
    with pytest.raises(OutboxCorrupt, match=str(db)):
        Outbox(db)


def test_a_damaged_page_is_found_by_the_check_at_open(db: Path) -> None:
    with Outbox(db) as outbox:
        outbox.put_many([telemetry("d0", i, pad=300) for i in range(200)])
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    raw = bytearray(db.read_bytes())
    for page in (3, 4, 5):  # scribble over b-tree pages, keeping the header page intact
        raw[page * page_size:(page + 1) * page_size] = b"\xa5" * page_size
    db.write_bytes(bytes(raw))
    with pytest.raises(OutboxCorrupt, match=str(db)):
        Outbox(db)


# -- epoch ---------------------------------------------------------------------------------------

def test_every_device_message_carries_the_outbox_epoch_and_a_new_card_starts_a_new_one(
        tmp_path: Path) -> None:
    first_card, second_card = tmp_path / "a.db", tmp_path / "b.db"
    with Outbox(first_card) as outbox:
        epoch = outbox.epoch
        stored = outbox.put_many([telemetry("fire-1"), alarm("fire-1"), state("fire-1")])
        assert [(body(s)["epoch"], body(s)["seq"]) for s in stored] == [(epoch, 1), (epoch, 2),
                                                                        (epoch, 3)]
        status = outbox.put(Message(f"{GW}/status", {"v": 1}, "status"))
        assert "epoch" not in body(status)  # gateway messages are not numbered
    with Outbox(first_card) as outbox:  # a restart keeps the epoch, and seq runs on
        assert outbox.epoch == epoch
        assert body(outbox.put(telemetry("fire-1")))["seq"] == 4
    with Outbox(second_card) as outbox:  # the SD card was replaced: seq 1 again, new epoch
        again = outbox.put(telemetry("fire-1"))
        assert body(again)["seq"] == 1 and body(again)["epoch"] != epoch
        assert len(outbox.epoch) == 16 and outbox.stats().epoch == outbox.epoch


def test_a_version_1_outbox_is_upgraded_in_place_with_its_seqs_kept(db: Path) -> None:
    with Outbox(db) as outbox:
        outbox.put_many([telemetry("fire-1", i) for i in range(3)])
    con = sqlite3.connect(db)  # what a gateway of the previous release left on the card
    con.execute("DROP TABLE identity")
    con.execute("DROP TABLE active_alarms")
    con.execute("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with Outbox(db) as outbox:
        assert outbox.epoch and outbox.next_seq("fire-1") == 4
        assert outbox.stats().depth == 3


# -- state beside its messages -------------------------------------------------------------------

def test_active_alarm_ids_are_stored_with_the_alarm_edges_that_changed_them(db: Path) -> None:
    with Outbox(db) as outbox:
        outbox.put_many([alarm("fire-1", 1)], alarm_state={"fire-1": {"smoke": "a1"}})
        outbox.put_many([alarm("panel", 2)], alarm_state={"panel": {"fire:1:3": "p2"}})
        outbox.put_many([alarm("fire-1", 3)], alarm_state={"fire-1": {}})  # cleared
    with Outbox(db) as outbox:
        assert outbox.active_alarms() == {"panel": {"fire:1:3": "p2"}}


STATE_PRODUCER = textwrap.dedent("""
    import os
    import sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from gateway.outbox import Message, Outbox
    outbox = Outbox(Path({db!r}))
    active = outbox.active_alarms().get("fire-1", {{}})
    n = 0
    while True:
        n += 1
        if active:
            [(kind, alarm_id)] = active.items()
            active = {{}}
            body = {{"alarm_id": alarm_id, "state": "cleared"}}
        else:
            # unique across producer runs, as a real id is (it carries the node's boot count)
            kind, alarm_id = "smoke", f"fire-1:smoke:{{os.getpid()}}:{{n}}"
            active = {{kind: alarm_id}}
            body = {{"alarm_id": alarm_id, "state": "raised"}}
        outbox.put_many([Message("a", body, "alarm", device="fire-1")],
                        alarm_state={{"fire-1": active}})
        ack = outbox.put(Message("ack", {{"id": f"cmd-{{n}}", "ok": True}}, "ack"))
        print("ack", ack.id, flush=True)  # printed only after the commit returned
""")


def test_sigkill_never_leaves_an_alarm_raised_but_unknown_nor_loses_a_promised_ack(
        db: Path) -> None:
    promised: set[int] = set()
    for lines in (30, 1, 75, 12, 3, 50):  # six crashes against the same file
        code = STATE_PRODUCER.format(repo=str(REPO), db=str(db))
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for _ in range(lines):
            line = proc.stdout.readline()
            assert line, "producer died before it was killed"
            promised.add(int(line.split()[1]))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        promised |= {int(ln.split()[1]) for ln in proc.stdout.read().splitlines(keepends=True)
                     if ln.endswith("\n")}
    with Outbox(db) as outbox:
        queued = outbox.peek(1_000_000)
        assert promised <= {m.id for m in queued if m.kind == "ack"}, "a promised ack was lost"
        edges = [body(m) for m in queued if m.kind == "alarm"]
        raised_not_cleared = {e["alarm_id"] for e in edges if e["state"] == "raised"} - {
            e["alarm_id"] for e in edges if e["state"] == "cleared"}
        # what the gateway will remember after the crash is exactly what it has told the fleet
        assert set(outbox.active_alarms().get("fire-1", {}).values()) == raised_not_cleared


# -- drops are declared --------------------------------------------------------------------------

def test_seq_runs_turns_dropped_seqs_into_inclusive_ranges() -> None:
    assert seq_runs([]) == []
    assert seq_runs([3, 1, 2, 7, 9, 8]) == [[1, 3], [7, 9]]
    assert seq_runs([5]) == [[5, 5]]


def test_each_eviction_is_declared_in_one_drops_message_per_device(db: Path) -> None:
    with Outbox(db, max_bytes=2000) as outbox:
        for i in range(60):
            outbox.put_many([telemetry("d0", i), telemetry("d1", i)])
        drops = [m for m in outbox.peek(1000) if m.kind == "drops"]
        assert sorted(m.topic for m in drops) == [f"{GW}/d0/drops", f"{GW}/d1/drops"]
        for m in drops:
            b = body(m)
            assert m.qos == 1 and not m.retain and m.seq is None
            assert b["epoch"] == outbox.epoch and b["reason"] == "disk_bound"
            assert b["ranges"] == [[1, outbox.stats().dropped_by_device[str(b["device"])]]]


# -- dead letters --------------------------------------------------------------------------------

def test_the_dead_letter_table_is_bounded_and_what_it_discards_is_counted(db: Path) -> None:
    with Outbox(db, max_dead_letters=3) as outbox:
        stored = outbox.put_many([alarm("fire-1", i) for i in range(5)])
        for s in stored:
            outbox.dead_letter(s.id, "not authorised", 135)
        assert [d.seq for d in outbox.dead_letters()] == [5, 4, 3]
        stats = outbox.stats()
        assert (stats.dead_letters, stats.dead_letters_held, stats.dead_letters_discarded) == (
            5, 3, 2)
    with Outbox(db, max_dead_letters=3) as outbox:
        assert outbox.stats().dead_letters_discarded == 2


def test_a_technician_requeues_dead_letters_with_their_seq(db: Path) -> None:
    with Outbox(db) as outbox:
        first, second, kept = outbox.put_many([alarm("fire-1", i) for i in range(3)])
        outbox.dead_letter(first.id, "quota", 151)
        outbox.dead_letter(second.id, "not authorised", 135)
        assert outbox.requeue_dead([second.id]) == 1
        assert [(m.seq, m.payload) for m in outbox.peek(10)] == [
            (kept.seq, kept.payload), (second.seq, second.payload)]
        assert outbox.requeue_dead() == 1
        assert outbox.stats().dead_letters_held == 0 and outbox.stats().depth == 3
