"""One ingest batch as a unit of work, on SQLite and on PostgreSQL, with the real embedded
telemetry store: de-duplication, drop accounting, rejects, dispatch to registry and alarms, and
what happens when the sink or one message fails."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from contracts.mqtt import device_topic, status_topic
from fleet.alarms.models import Alarm
from fleet.core.db import Database
from fleet.ingest.models import IngestReject, IngestStream
from fleet.ingest.service import Inbound, Ingestor
from fleet.registry.models import Device, Gateway
from fleet.telemetry import EmbeddedStore, Reading, SinkError

TS = "2026-12-02T05:00:00.000Z"


def telemetry(gw: str, dev: str, seq: int, epoch: str = "e1", **extra: Any) -> Inbound:
    body = {"v": 1, "device": dev, "class": "fire", "ts": f"2026-12-02T05:00:{seq % 60:02d}Z",
            "epoch": epoch, "seq": seq, "values": {"temperature": 20.0 + seq}, **extra}
    return Inbound(device_topic(gw, dev, "telemetry"), json.dumps(body).encode())


def drops(gw: str, dev: str, ranges: list[list[int]], epoch: str = "e1") -> Inbound:
    body = {"v": 1, "device": dev, "epoch": epoch, "ranges": ranges, "reason": "disk-full"}
    return Inbound(device_topic(gw, dev, "drops"), json.dumps(body).encode())


def alarm(gw: str, dev: str, seq: int, state: str = "raised") -> Inbound:
    body = {"v": 1, "device": dev, "class": "fire", "ts": TS, "epoch": "e1", "seq": seq,
            "alarm_id": f"{dev}-smoke-1", "type": "smoke", "state": state, "severity": "high"}
    return Inbound(device_topic(gw, dev, "alarm"), json.dumps(body).encode())


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database.from_url(db_url)
    yield database
    database.dispose()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(tmp_path / "telemetry.db")
    yield s
    s.close()


def stream(db: Database, gw: str, dev: str, epoch: str = "e1") -> IngestStream:
    with db.transaction() as session:
        row = session.get(IngestStream, (gw, dev, epoch))
        assert row is not None
        return row


def test_a_batch_with_redeliveries_is_stored_once_and_the_copies_counted(
        db: Database, store: EmbeddedStore) -> None:
    ingest = Ingestor(db, store)
    first = [telemetry("gw-1", "fire-1", s) for s in range(1, 51)]
    result = ingest.process(first)
    assert result.by_channel["telemetry"] == 50 and result.duplicates == 0
    # The broker redelivers the tail of the batch (ingest crashed before acknowledging it).
    again = ingest.process(first[40:] + [telemetry("gw-1", "fire-1", s) for s in range(51, 61)])
    assert again.duplicates == 10 and again.by_channel["telemetry"] == 10
    assert store.seqs("fire-1", "e1") == list(range(1, 61))
    row = stream(db, "gw-1", "fire-1")
    assert (row.produced, row.received, row.duplicates, row.gaps) == (60, 60, 10, 0)
    assert json.loads(row.seen) == [[1, 60]]


def test_declared_drops_close_the_books_and_undeclared_losses_show_as_gaps(
        db: Database, store: EmbeddedStore) -> None:
    ingest = Ingestor(db, store)
    ingest.process([telemetry("gw-1", "fire-1", s) for s in (1, 2, 6, 7, 9)]
                   + [drops("gw-1", "fire-1", [[3, 5]])])
    row = stream(db, "gw-1", "fire-1")
    assert (row.produced, row.received, row.declared_drops, row.gaps) == (9, 5, 3, 1)
    assert store.count("fire-1") == 5


def test_each_epoch_of_a_device_is_counted_on_its_own(db: Database, store: EmbeddedStore) -> None:
    ingest = Ingestor(db, store)
    ingest.process([telemetry("gw-1", "fire-1", s) for s in (1, 2, 3)]
                   + [telemetry("gw-1", "fire-1", s, epoch="e2") for s in (1, 2)])
    assert stream(db, "gw-1", "fire-1", "e1").received == 3
    assert stream(db, "gw-1", "fire-1", "e2").received == 2
    assert store.count("fire-1") == 5


def test_malformed_messages_are_counted_per_gateway_and_reason_and_never_stop_the_batch(
        db: Database, store: EmbeddedStore) -> None:
    ingest = Ingestor(db, store)
    bad = [
        Inbound("edgefleet/v1/gw-2/fire-1/telemetry", b"{not json"),
        Inbound("edgefleet/v1/gw-2/fire-1/telemetry", b'{"v":1,"device":"fire-1"}'),
        Inbound("edgefleet/v1/gw-2/fire-1/humidity", b"{}"),
        Inbound("elsewhere/x", b"{}"),
        Inbound(device_topic("gw-2", "fire-1", "telemetry"),
                json.dumps({"v": 1, "device": "fire-9", "class": "fire", "ts": TS,
                            "epoch": "e", "seq": 1, "values": {}}).encode()),
    ]
    result = ingest.process([*bad, telemetry("gw-2", "fire-1", 1), bad[0]])
    assert result.by_channel["telemetry"] == 1
    with db.transaction() as session:
        counts = {(r.gateway, r.reason): r.count for r in session.scalars(select(IngestReject))}
    assert counts == {("gw-2", "bad-telemetry"): 3, ("gw-2", "bad-topic"): 1,
                      ("?", "bad-topic"): 1, ("gw-2", "device-mismatch"): 1}
    assert ingest.metrics.rejects[("gw-2", "bad-telemetry")] == 3
    assert store.count() == 1


def test_alarm_state_and_status_reach_their_services_once(db: Database,
                                                          store: EmbeddedStore) -> None:
    ingest = Ingestor(db, store)
    state = {"v": 1, "device": "fire-1", "class": "fire", "ts": TS, "epoch": "e1", "seq": 3,
             "online": True, "firmware": "1.2.0"}
    status = {"v": 1, "gateway": "gw-1", "online": True, "ts": TS}
    batch = [telemetry("gw-1", "fire-1", 1), alarm("gw-1", "fire-1", 2),
             Inbound(device_topic("gw-1", "fire-1", "state"), json.dumps(state).encode()),
             Inbound(status_topic("gw-1"), json.dumps(status).encode())]
    ingest.process(batch)
    ingest.process(batch)  # all redelivered
    with db.transaction() as session:
        assert len(session.scalars(select(Alarm)).all()) == 1
        device = session.scalars(select(Device)).one()
        assert (device.key, device.firmware, device.connectivity) == ("fire-1", "1.2.0",
                                                                      "online")
        assert session.scalars(select(Gateway)).one().connectivity == "online"
    row = stream(db, "gw-1", "fire-1")
    assert (row.received, row.duplicates, row.produced) == (3, 3, 3)


class _FailingSink:
    def __init__(self) -> None:
        self.fail = True
        self.written: list[Reading] = []

    def write(self, readings: Sequence[Reading]) -> None:
        if self.fail:
            raise SinkError("InfluxDB unreachable")
        self.written += readings

    def close(self) -> None:
        pass


def test_a_sink_outage_leaves_the_batch_unaccounted_so_its_retry_is_not_a_duplicate(
        db: Database) -> None:
    sink = _FailingSink()  # a fault the real sinks cannot be made to produce on demand here
    ingest = Ingestor(db, sink)
    batch = [telemetry("gw-1", "fire-1", s) for s in (1, 2, 3)]
    with pytest.raises(SinkError):
        ingest.process(batch)
    with db.transaction() as session:
        assert session.get(IngestStream, ("gw-1", "fire-1", "e1")) is None
    sink.fail = False
    result = ingest.process(batch)
    assert result.duplicates == 0 and [r.seq for r in sink.written] == [1, 2, 3]


def test_one_message_that_trips_a_service_is_rejected_and_the_rest_are_kept(
        db: Database, store: EmbeddedStore) -> None:
    def broken_alarm(session: Any, gateway: str, payload: Any) -> None:
        raise RuntimeError("bug in the alarm service")

    ingest = Ingestor(db, store, handlers={"alarm": broken_alarm})
    result = ingest.process([telemetry("gw-1", "fire-1", 1), alarm("gw-1", "fire-1", 2),
                             telemetry("gw-1", "fire-1", 3)])
    assert result.by_channel["telemetry"] == 2
    assert result.rejects == {("gw-1", "internal-error"): 1}
    assert store.seqs("fire-1", "e1") == [1, 3]


def test_last_seen_follows_the_newest_message_and_never_goes_back(db: Database,
                                                                   store: EmbeddedStore) -> None:
    ingest = Ingestor(db, store, touch_interval_s=0)
    ingest.process([telemetry("gw-1", "fire-1", 5)])   # first heard: registered by the registry
    ingest.process([telemetry("gw-1", "fire-1", 9)])   # known: the bulk path
    ingest.process([telemetry("gw-1", "fire-1", 7)])   # an older reading, replayed late
    with db.transaction() as session:
        device = session.scalars(select(Device)).one()
        gateway = session.scalars(select(Gateway)).one()
        assert device.last_seen is not None and device.last_seen.second == 9
        assert gateway.last_seen == device.last_seen


def test_a_gateways_command_ack_is_recorded_on_the_command(db: Database,
                                                           store: EmbeddedStore) -> None:
    from contracts.mqtt import ack_topic
    from fleet.control.models import DeviceCommand

    ingest = Ingestor(db, store)
    ingest.process([telemetry("gw-1", "fire-1", 1)])  # the device, first heard
    command_id = "c0ffee"
    with db.transaction() as session:  # a reset, already published to the gateway
        device = session.scalars(select(Device)).one()
        session.add(DeviceCommand(command_id=command_id, device_id=device.id, action="reset",
                                  body={}, state="sent", error=""))
    ack = {"v": 1, "id": command_id, "ok": False, "error": "device busy", "ts": TS}
    result = ingest.process([Inbound(ack_topic("gw-1"), json.dumps(ack).encode())])
    assert result.by_channel["ack"] == 1
    with db.transaction() as session:
        command = session.scalars(select(DeviceCommand)).one()
        assert (command.state, command.error) == ("failed", "device busy")


class _Recording:
    """A telemetry sink that keeps what it was handed."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def write(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)

    def close(self) -> None:
        pass


def test_telemetry_reaches_the_sink_tagged_with_the_devices_site_and_ward(
        db: Database) -> None:
    from fleet.registry.models import Area, Site

    with db.transaction() as session:
        city = Area(name="HCMC", kind="city", path="/hcmc/")
        session.add(city)
        session.flush()
        ward = Area(name="Ben Thanh", kind="ward", parent_id=city.id, path="/hcmc/ben-thanh/")
        session.add(ward)
        session.flush()
        site = Site(name="Market hall", area_id=ward.id)
        session.add(site)
        session.flush()
        gateway = Gateway(key="gw-market", site_id=site.id)
        session.add(gateway)
        session.flush()
        session.add_all([Device(gateway_id=gateway.id, key="smoke-1", device_class="fire",
                                site_id=site.id),
                         Device(gateway_id=gateway.id, key="smoke-2", device_class="fire")])
        site_id = site.id
    sink = _Recording()
    Ingestor(db, sink).process([telemetry("gw-market", "smoke-1", 1),
                                telemetry("gw-market", "smoke-2", 1),
                                telemetry("gw-market", "smoke-new", 1),
                                telemetry("gw-other", "smoke-1", 1)])
    tags = {(r.gateway, r.device): (r.site, r.area) for r in sink.readings}
    assert tags == {("gw-market", "smoke-1"): (str(site_id), "/hcmc/ben-thanh/"),
                    ("gw-market", "smoke-2"): ("", ""),  # not placed at a site yet
                    ("gw-market", "smoke-new"): ("", ""),  # first heard: not registered yet
                    ("gw-other", "smoke-1"): ("", "")}  # same device id, another gateway
