"""Loss-proof ingest end to end, with real parts only: Mosquitto on the fleet's generated
configuration, ``edgefleet fleet ingest`` processes, C publishers (``mosquitto_pub -l -q 1``)
and the embedded telemetry store.

- Ingest is SIGKILLed again and again while seq-numbered telemetry streams in; each time it is
  restarted. Afterwards every device's store holds exactly produced minus declared drops, each
  seq once, and the accounting balances (no gaps).
- Two ingest replicas on one shared subscription (PostgreSQL, as production runs replicas):
  both take part, nothing is lost or doubled.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from contracts.mqtt import device_topic
from fleet.core.db import Database
from fleet.ingest.models import IngestStream
from fleet.telemetry import EmbeddedStore
from tests.fleet.ingest_harness import (
    Background,
    FleetBroker,
    IngestProcess,
    publish_lines,
    publish_one,
    telemetry_line,
    wait_for_count,
    wait_until,
    write_config,
)

#: Measurement times an hour or two back: inside the embedded store's raw retention, so its
#: periodic roll-up never prunes the rows a check counts.
T0_MS = int(time.time() * 1000) - 2 * 3600 * 1000
EPOCH = "ep-kill"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[FleetBroker]:
    b = FleetBroker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    import shutil

    path = tmp_path / "fleet.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@dataclass
class Plan:
    """What the gateways produce: per device seqs 1..per_device, minus declared drop ranges."""

    gateways: int
    devices_per_gateway: int
    per_device: int
    dropped: dict[str, tuple[int, int]]

    def devices(self) -> list[tuple[str, str]]:
        return [(f"gw-{g}", f"fire-{g}-{d}") for g in range(self.gateways)
                for d in range(self.devices_per_gateway)]

    def expected(self, device: str) -> list[int]:
        lo, hi = self.dropped.get(device, (0, -1))
        return [s for s in range(1, self.per_device + 1) if not lo <= s <= hi]

    def streams(self) -> dict[str, list[str]]:
        return {device_topic(gw, dev, "telemetry"):
                [telemetry_line(dev, EPOCH, s, T0_MS) for s in self.expected(dev)]
                for gw, dev in self.devices()}

    @property
    def total(self) -> int:
        return sum(len(self.expected(d)) for _, d in self.devices())


def _declare_drops(broker: FleetBroker, plan: Plan) -> None:
    for gw, dev in plan.devices():
        if dev in plan.dropped:
            lo, hi = plan.dropped[dev]
            publish_one(broker, device_topic(gw, dev, "drops"), json.dumps(
                {"v": 1, "device": dev, "epoch": EPOCH, "ranges": [[lo, hi]],
                 "reason": "disk-full"}))


_probe_seq = itertools.count(1)


def _run_count(store: EmbeddedStore) -> int:
    """Messages of the run in the store (the probes left out)."""
    return store.count() - store.count("probe")


def _probe_until_subscribed(broker: FleetBroker, store: EmbeddedStore) -> None:
    """The first start creates the persistent session: publish probes until this store has one,
    so nothing of the run is published before the subscription exists. Each probe is a new seq:
    with replicas, another replica may take a probe, and a repeat of it would be a duplicate."""
    topic = device_topic("gw-probe", "probe", "telemetry")
    deadline = time.monotonic() + 60
    while store.count("probe") == 0:
        if time.monotonic() > deadline:
            raise AssertionError("ingest never subscribed (no probe stored)")
        publish_one(broker, topic, telemetry_line("probe", "p", next(_probe_seq), T0_MS))
        time.sleep(0.3)


def _check_books(plan: Plan, store: EmbeddedStore, db_url: str, *,
                 check_store: bool = True) -> dict[str, int]:
    for _, dev in plan.devices():
        if check_store:
            assert store.seqs(dev, EPOCH) == plan.expected(dev), f"{dev}: store differs"
    db = Database.from_url(db_url)
    try:
        with db.transaction() as session:
            rows = {r.device: r for r in session.scalars(
                select(IngestStream).where(IngestStream.epoch == EPOCH))}
    finally:
        db.dispose()
    duplicates = 0
    for _, dev in plan.devices():
        row = rows[dev]
        lo, hi = plan.dropped.get(dev, (0, -1))
        declared = hi - lo + 1 if hi >= lo else 0
        assert (row.produced, row.received, row.declared_drops, row.gaps) == \
            (plan.per_device, plan.per_device - declared, declared, 0), dev
        duplicates += row.duplicates
    return {"duplicates": duplicates}


def _run_with_kills(tmp_path: Path, broker: FleetBroker, db_url: str, plan: Plan,
                    kills: int, client: str = "paho") -> dict[str, float]:
    config = write_config(tmp_path / "fleet.toml", database_url=db_url,
                          data_dir=tmp_path / "data", broker=broker, client_id="ingest-k",
                          extra_ingest=f'client = "{client}"\n')
    ingest = IngestProcess(config, tmp_path / "ingest.log")
    ingest.start()
    store = EmbeddedStore(tmp_path / "data" / "telemetry.db")
    try:
        _probe_until_subscribed(broker, store)
        streams = plan.streams()
        start = time.monotonic()
        publisher = Background(lambda: publish_lines(broker, streams, chunk=50,
                                                     pause_s=0.02))
        publisher.start()
        _declare_drops(broker, plan)
        # Kill whenever the store has grown by a share of the run since the last restart, so
        # every kill lands mid-stream (with messages received, written, not yet acknowledged).
        step = plan.total // (kills + 1)
        for k in range(1, kills + 1):
            mark = k * step
            wait_until(lambda m=mark: store.count() >= m, 120, "ingest progress")
            assert store.count() < plan.total, "the run ended before the kill"
            ingest.kill()
            ingest.start()
        publisher.join_checked(300)
        published = time.monotonic() - start
        wait_for_count(lambda: _run_count(store), plan.total, stall_s=20,
                       what="messages stored")
        elapsed = time.monotonic() - start
        # Let late redeliveries land, then check the books.
        time.sleep(1.0)
        books = _check_books(plan, store, db_url)
        assert _run_count(store) == plan.total  # nothing twice
        assert not broker.dropped_outgoing(), "the broker dropped messages for ingest"
        return {"published_s": published, "elapsed_s": elapsed, "kills": kills,
                "starts": ingest.starts, **books}
    finally:
        ingest.stop()
        store.close()


@pytest.mark.parametrize("client", ["paho", "lean"])
def test_ingest_killed_five_times_mid_stream_stores_every_message_exactly_once(
        tmp_path: Path, broker: FleetBroker, sqlite_url: str, client: str) -> None:
    plan = Plan(gateways=2, devices_per_gateway=5, per_device=2_000,
                dropped={"fire-0-1": (300, 349), "fire-1-3": (1_990, 2_000)})
    stats = _run_with_kills(tmp_path, broker, sqlite_url, plan, kills=5, client=client)
    print(f"\n{plan.total} messages, {stats}")
    assert stats["starts"] == 6


@pytest.mark.slow
@pytest.mark.parametrize("client", ["paho", "lean"])
def test_ingest_killed_ten_times_during_100k_messages_stores_every_message_exactly_once(
        tmp_path: Path, broker: FleetBroker, sqlite_url: str, client: str) -> None:
    plan = Plan(gateways=4, devices_per_gateway=5, per_device=5_000,
                dropped={"fire-0-1": (300, 349), "fire-3-4": (4_990, 5_000)})
    assert plan.total + 61 == 100_000
    stats = _run_with_kills(tmp_path, broker, sqlite_url, plan, kills=10, client=client)
    print(f"\n{plan.total} messages, {stats}")


def test_two_replicas_on_one_shared_subscription_split_the_load_and_lose_nothing(
        tmp_path: Path, broker: FleetBroker, pg_url: str) -> None:
    plan = Plan(gateways=2, devices_per_gateway=5, per_device=1_000,
                dropped={"fire-1-2": (500, 509)})
    replicas, stores = [], []
    for name in ("a", "b"):
        # Each replica its own embedded store, to see who wrote what; the accounting is shared
        # in PostgreSQL, as production replicas share it.
        config = write_config(tmp_path / f"fleet-{name}.toml", database_url=pg_url,
                              data_dir=tmp_path / f"data-{name}", broker=broker,
                              client_id=f"ingest-{name}", batch_max=200)
        replicas.append(IngestProcess(config, tmp_path / f"ingest-{name}.log"))
        replicas[-1].start()
        stores.append(EmbeddedStore(tmp_path / f"data-{name}" / "telemetry.db"))
    try:
        for store in stores:  # each replica's session subscribed
            _probe_until_subscribed(broker, store)
        publish_lines(broker, plan.streams(), chunk=100)
        _declare_drops(broker, plan)
        wait_for_count(lambda: sum(_run_count(s) for s in stores), plan.total,
                       stall_s=20, what="messages stored by the two replicas")
        time.sleep(1.0)
        took = [_run_count(s) for s in stores]
        assert min(took) > plan.total // 5, f"the load was not shared: {took}"
        for _, dev in plan.devices():
            a, b = (set(s.seqs(dev, EPOCH)) for s in stores)
            assert not a & b, f"{dev}: {len(a & b)} messages written by both replicas"
            assert sorted(a | b) == plan.expected(dev), dev
        _check_books(plan, stores[0], pg_url, check_store=False)
        print(f"\nsplit {took} of {plan.total}")
    finally:
        for replica in replicas:
            replica.stop()
        for store in stores:
            store.close()


@pytest.mark.parametrize("client", ["paho", "lean"])
def test_a_broker_restart_mid_stream_loses_and_doubles_nothing(
        tmp_path: Path, broker: FleetBroker, sqlite_url: str, client: str) -> None:
    """Ingest reconnects on its own; messages it held from the old connection are written but
    acknowledged only through their redelivered copies (packet ids belong to a connection)."""
    # Long enough that the restart lands mid-stream: the batched ingest stored all of 8,000
    # before the check below could run (CI), which would test nothing.
    plan = Plan(gateways=1, devices_per_gateway=4, per_device=10_000, dropped={})
    config = write_config(tmp_path / "fleet.toml", database_url=sqlite_url,
                          data_dir=tmp_path / "data", broker=broker, client_id="ingest-r",
                          extra_ingest=f'client = "{client}"\n')
    ingest = IngestProcess(config, tmp_path / "ingest.log")
    ingest.start()
    store = EmbeddedStore(tmp_path / "data" / "telemetry.db")
    try:
        _probe_until_subscribed(broker, store)
        publish_lines(broker, plan.streams(), chunk=500)
        wait_until(lambda: store.count() >= plan.total // 3, 60, "ingest progress")
        assert store.count() < plan.total, "the run ended before the restart"
        broker.stop()
        broker.start()
        wait_for_count(lambda: _run_count(store), plan.total, stall_s=20,
                       what="messages stored")
        time.sleep(1.0)
        _check_books(plan, store, sqlite_url)
        assert ingest.alive
    finally:
        ingest.stop()
        store.close()
