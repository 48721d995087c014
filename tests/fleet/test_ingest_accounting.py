"""Delivery accounting per (device, epoch): table tests of the pure core, no broker, no database.

Each row is what a dispatcher would see: the seqs that arrived (in arrival order), the drop
ranges the gateway declared, and the totals the fleet must then show for the device.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from fleet.ingest.accounting import SeqSet, StreamState, StreamTotals
from fleet.ingest.batchsql import BatchSQL
from fleet.ingest.models import IngestStream


@pytest.mark.parametrize(("arrivals", "declared", "totals", "gaps"), [
    # produced, received, duplicates, declared_drops, gaps
    ([1, 2, 3, 4], [], StreamTotals(4, 4, 0, 0, 0), []),
    ([1, 2, 2, 3, 3, 3], [], StreamTotals(3, 3, 3, 0, 0), []),
    ([1, 2, 5, 6], [], StreamTotals(6, 4, 0, 0, 2), [(3, 4)]),
    ([1, 2, 5, 6], [(3, 4)], StreamTotals(6, 4, 0, 2, 0), []),
    # A drop report may arrive before the later messages it sits between.
    ([], [(3, 4)], StreamTotals(4, 0, 0, 2, 2), [(1, 2)]),
    # A declared seq that arrives after all counts as delivered, not dropped.
    ([1, 2, 3, 4], [(3, 5)], StreamTotals(5, 4, 0, 1, 0), []),
    # The same declaration twice is one declaration.
    ([1, 4], [(2, 3), (2, 3)], StreamTotals(4, 2, 0, 2, 0), []),
    # Out of order (two ingest replicas on a shared subscription) and a late duplicate.
    ([3, 1, 2, 5, 4, 1], [], StreamTotals(5, 5, 1, 0, 0), []),
    ([10], [], StreamTotals(10, 1, 0, 0, 9), [(1, 9)]),
    ([1, 3, 5, 7], [(6, 6)], StreamTotals(7, 4, 0, 1, 2), [(2, 2), (4, 4)]),
])
def test_a_device_streams_totals_add_up(arrivals: list[int], declared: list[tuple[int, int]],
                                        totals: StreamTotals, gaps: list[tuple[int, int]]) -> None:
    state = StreamState()
    for seq in arrivals:
        state.receive(seq)
    state.declare(declared)
    assert state.totals() == totals
    assert state.gap_ranges() == gaps
    assert state.totals().balanced == (not gaps)


def test_a_redelivered_message_is_reported_as_a_duplicate_and_not_written_again() -> None:
    state = StreamState()
    assert state.receive(7) is True
    assert state.receive(7) is False
    assert state.totals().duplicates == 1


def test_the_seen_set_of_an_in_order_stream_stays_one_range_however_long() -> None:
    state = StreamState()
    for seq in range(1, 100_001):
        state.receive(seq)
    assert list(state.seen) == [(1, 100_000)]
    assert state.seen.to_json() == "[[1,100000]]"


def test_the_state_survives_its_json_round_trip() -> None:
    seen = SeqSet([(1, 3), (7, 9), (12, 12)])
    again = SeqSet.from_json(seen.to_json())
    assert again == seen and len(again) == 7
    assert SeqSet.from_json(None) == SeqSet()


@pytest.mark.parametrize("text", ["[[1,5]]", "[[ 1 , 5 ]]", "[[7,7]]", "[[1,3],[5,9]]",
                                  "[[5,9],[1,3]]", "[[1,4],[5,9]]"])
def test_the_one_range_fast_path_reads_what_json_reads(text: str) -> None:
    import json

    assert SeqSet.from_json(text) == SeqSet((lo, hi) for lo, hi in json.loads(text))


@pytest.mark.parametrize("text", ["[[3,1]]", "[[0,2]]", "[[1,2,3]]", "[[x,2]]", "[[1]]"])
def test_a_malformed_one_range_text_is_refused_as_before(text: str) -> None:
    with pytest.raises(ValueError):
        SeqSet.from_json(text)


@pytest.mark.parametrize(("ranges", "merged"), [
    ([(1, 3), (4, 6)], [(1, 6)]),             # adjacent ranges merge
    ([(5, 6), (1, 2)], [(1, 2), (5, 6)]),     # kept sorted
    ([(1, 10), (3, 4)], [(1, 10)]),           # contained
    ([(1, 2), (5, 6), (9, 9), (3, 8)], [(1, 9)]),  # one range bridges several
    ([(2, 2), (4, 4), (3, 3)], [(2, 4)]),
])
def test_seq_ranges_merge_into_the_fewest_ranges(ranges: list[tuple[int, int]],
                                                 merged: list[tuple[int, int]]) -> None:
    assert list(SeqSet(ranges)) == merged


@pytest.mark.parametrize("bad", [(0, 3), (5, 4), (-1, -1)])
def test_a_range_outside_the_contract_is_refused(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="bad seq range"):
        SeqSet([bad])


def test_shuffled_arrivals_with_redeliveries_match_a_plain_set() -> None:
    """The range set against the obvious model, over random arrival orders and drops."""
    rng = random.Random(8)
    for _ in range(200):
        produced = rng.randint(1, 60)
        dropped = {s for s in range(1, produced + 1) if rng.random() < 0.2}
        arriving = [s for s in range(1, produced + 1) if s not in dropped or rng.random() < 0.3]
        lost = {s for s in arriving if rng.random() < 0.1}
        copies = [s for s in arriving if s not in lost] + rng.sample(arriving, len(arriving) // 3)
        rng.shuffle(copies)
        state = StreamState()
        for seq in copies:
            state.receive(seq)
        state.declare((s, s) for s in dropped)
        delivered = set(copies)
        undeclared = set(range(1, max(delivered | dropped | {0}) + 1)) - delivered - dropped
        assert state.totals() == StreamTotals(
            produced=max(delivered | dropped | {0}), received=len(delivered),
            duplicates=len(copies) - len(delivered), declared_drops=len(dropped - delivered),
            gaps=len(undeclared))
        assert {s for a, b in state.gap_ranges() for s in range(a, b + 1)} == undeclared


@pytest.mark.parametrize("ts", [datetime(2026, 12, 2, 17, 15, 4, 482225, tzinfo=UTC),
                                datetime(2026, 12, 2, 17, 15, 5, tzinfo=UTC)])
def test_ingest_stores_a_timestamp_in_the_text_the_orm_stores(ts: datetime) -> None:
    """SQLite keeps timestamps as text and `last_seen < ?` compares them as text: the rows that
    ingest's raw statements write must hold the ORM's own format (a "+00:00" suffix, or a
    whole second without its ".000000", sorted wrongly against the ORM's rows)."""
    engine = create_engine("sqlite://")
    IngestStream.__table__.create(engine)  # type: ignore[attr-defined]
    with Session(engine) as session:
        session.add(IngestStream(gateway="gw", device="orm", epoch="e", updated_at=ts))
        session.commit()
    sql = BatchSQL(engine.dialect)
    with engine.begin() as conn:
        sql.insert_missing(conn, [("gw", "raw", "e")], ts)
        stored: dict[str, str] = dict(
            conn.exec_driver_sql("SELECT device, updated_at FROM ingest_streams").tuples().all())
    assert stored["raw"] == stored["orm"]
