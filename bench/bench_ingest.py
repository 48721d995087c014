"""Fleet ingest throughput: broker -> validated -> de-duplicated -> durable sink -> acknowledged.

- `ingest_msgs_per_s`: 10,000 simulated devices behind 100 gateways; a backlog of
  MESSAGES telemetry messages queued at the broker (Mosquitto on the fleet's own generated
  configuration) for the ingest share group, drained by PROCS `edgefleet fleet ingest` processes
  on one MQTT 5 shared subscription. Each message is parsed and validated against the contract,
  de-duplicated and accounted per (device, epoch, seq), written to the embedded telemetry store
  (synchronous=FULL), its accounting committed (SQLite, or PostgreSQL with
  EDGEFLEET_BENCH_INGEST_DB=postgresql), and only then acknowledged. Timed from the first message
  made durable to the last (process start-up excluded; reported separately).
- `ingest_vs_c_client`: that rate / the rate at which the same broker delivers the same backlog
  to one `mosquitto_sub -q 1` (a C client that only prints), measured in the same run.
  Its reference also gives the Python floor: the rate at which one Python process on ingest's
  own lean MQTT client (bench/lean_floor.py: wire decode + PUBACK, no JSON, no validation, no
  store) drains the same backlog from the same broker in the same run, / the C client's rate.
  It says whether `ingest_vs_c_client` >= 1.0 is reachable by any Python consumer here: above
  1.0, the gap is ingest's own work per message, not Python's MQTT receive. (It is not a metric
  of its own: results.json's contract gives every metric a goal, and this one has none.)

Also printed: the CPU time the ingest processes and the broker spent per message while draining
(from /proc), and the load average.

Before the timed run every device sends one message (not timed), so the registry knows all
10,000 devices, as in a running fleet; the timed run is then 10 more messages per device.
Afterwards every device's store holds seqs 1..11 exactly once, or the bench fails.

Environment: EDGEFLEET_BENCH_INGEST_PROCS (default 2; the best on this 2-core machine: 1 is
bound to one core, 3 spend more CPU per message contending for SQLite's write lock),
EDGEFLEET_BENCH_INGEST_MESSAGES (default 100,000), EDGEFLEET_BENCH_INGEST_DB (sqlite),
EDGEFLEET_BENCH_INGEST_CLIENT (lean, or paho), EDGEFLEET_BENCH_INGEST_PROFILE (a directory: each
ingest thread is run under cProfile, bench/profile_ingest.py).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.results import Metric
from contracts.mqtt import device_topic
from fleet.core.migrate import upgrade
from tests.fleet.ingest_harness import (
    MOSQUITTO_SUB,
    FleetBroker,
    IngestProcess,
    telemetry_line,
    wait_for_count,
    write_config,
)

GATEWAYS, DEVICES = 100, 10_000
GOAL_RATE, GOAL_RATIO = 20_000.0, 1.0
#: Measurement times an hour or two back: inside the embedded store's raw retention, so its
#: periodic roll-up never prunes the rows a check counts.
T0_MS = int(time.time() * 1000) - 2 * 3600 * 1000
EPOCH = "bench"

# A paho publisher in its own process (not timed): QoS 1, 1000 in flight; reads
# "topic<TAB>payload" lines from a file.
PUBLISHER = """
import sys, threading
import paho.mqtt.client as paho
port, path = int(sys.argv[1]), sys.argv[2]
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=paho.MQTTv5)
c.max_inflight_messages_set(1000)
c.max_queued_messages_set(0)
c.connect("127.0.0.1", port)
c.loop_start()
infos = []
with open(path) as f:
    for line in f:
        topic, payload = line.rstrip("\\n").split("\\t", 1)
        infos.append(c.publish(topic, payload, qos=1))
        if len(infos) == 20000:  # packet ids wrap at 65535: never have more outstanding
            for info in infos:
                info.wait_for_publish(120)
            infos = []
for info in infos:
    info.wait_for_publish(120)
c.disconnect()
c.loop_stop()
"""


def _devices() -> list[tuple[str, str]]:
    per = DEVICES // GATEWAYS
    return [(f"gw-{g:03d}", f"dev-{g:03d}-{d:03d}") for g in range(GATEWAYS) for d in range(per)]


def _publish(broker: FleetBroker, workdir: Path, seqs: range) -> int:
    path = workdir / f"publish-{seqs.start}.tsv"
    n = 0
    with path.open("w") as f:
        for seq in seqs:  # round-robin over devices, as gateways interleave
            for gw, dev in _devices():
                f.write(f"{device_topic(gw, dev, 'telemetry')}\t"
                        f"{telemetry_line(dev, EPOCH, seq, T0_MS)}\n")
                n += 1
    subprocess.run([sys.executable, "-c", PUBLISHER, str(broker.port), str(path)], check=True,
                   timeout=600)
    return n


class _Stored:
    """Rows stored so far in every store, polled every 20 ms while ingest runs.

    Counted incrementally (``count(*)`` of the rows above the highest id seen so far): a full
    ``count(*)`` scanned up to 110,000 rows of each store 50 times a second, on the cores ingest
    is measured on. Exact because each store has one writer, whose transactions commit in id
    order. The exactly-once check afterwards counts everything again."""

    def __init__(self, stores: list[Path]) -> None:
        self.stores = stores
        self._seen = {path: (0, 0) for path in stores}  # path -> (highest id, rows)

    def __call__(self) -> int:
        total = 0
        for path in self.stores:
            top, rows = self._seen[path]
            if path.exists():
                with sqlite3.connect(path, timeout=30) as db:
                    try:
                        n, high = db.execute("SELECT count(*), max(id) FROM raw WHERE id > ?",
                                             (top,)).fetchone()
                    except sqlite3.OperationalError:  # not created yet
                        n, high = 0, None
                if high is not None:
                    top, rows = int(high), rows + int(n)
                    self._seen[path] = (top, rows)
            total += rows
        return total


def _check_exactly_once(stores: list[Path], per_device: int) -> None:
    seen: dict[str, list[int]] = {}
    for path in stores:
        with sqlite3.connect(path) as db:
            for dev, seq in db.execute("SELECT device, seq FROM raw WHERE epoch = ?", (EPOCH,)):
                seen.setdefault(dev, []).append(seq)
    want = list(range(1, per_device + 1))
    bad = [d for _, d in _devices() if sorted(seen.get(d, [])) != want]
    if bad:
        raise SystemExit(f"ingest bench: {len(bad)} devices not stored exactly once "
                         f"(first {bad[0]}: {sorted(seen.get(bad[0], []))[:20]})")


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds a process (all its threads) has used so far (Linux)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _c_client_rate(broker: FleetBroker, n: int) -> float:
    """Drain the same backlog with one mosquitto_sub -q 1 (its session was made before the
    messages were published)."""
    args = [MOSQUITTO_SUB, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-c",
            "-i", "bench-c-ref", "-x", "3600", "-V", "mqttv5", "-t", "edgefleet/v1/#"]
    start = time.perf_counter()
    subprocess.run([*args, "-C", str(n)], stdout=subprocess.DEVNULL, check=True, timeout=600)
    return n / (time.perf_counter() - start)


FLOOR_CLIENT = "bench-py-floor"


def _floor(broker: FleetBroker, n: int) -> float:
    """Make (n == 0) or drain (n > 0) the Python floor's session: bench/lean_floor.py."""
    args = [sys.executable, "-m", "bench.lean_floor", broker.host, str(broker.port),
            FLOOR_CLIENT, "edgefleet/v1/#", str(n)]
    if n == 0:
        subprocess.run([*args, "subscribe-only"], check=True, timeout=60)
        return 0.0
    out = subprocess.run(args, check=True, timeout=600, capture_output=True, text=True)
    return float(out.stdout.strip())


def _database(workdir: Path) -> tuple[str, object]:
    kind = os.environ.get("EDGEFLEET_BENCH_INGEST_DB", "sqlite")
    if kind == "postgresql":
        from tests.fleet.conftest import PG_BIN, PG_USER, PostgresServer, _as_postgres

        class DurablePostgres(PostgresServer):
            """The test fixture's cluster, but durable: fsync and synchronous commit on."""

            def start(self) -> None:
                subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data),
                                             "-A", "trust", "-U", PG_USER, "-E", "UTF8"]),
                               check=True, capture_output=True)
                opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                        "-c max_connections=50")
                subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data),
                                             "-o", opts, "-l", str(self.log), "-w", "start"]),
                               check=True, capture_output=True)

        server = DurablePostgres()
        server.start()
        server.admin("CREATE DATABASE bench")
        url = server.url("bench")
        upgrade(url)
        return url, server
    url = f"sqlite:///{workdir / 'fleet.db'}"
    upgrade(url)
    return url, None


def run() -> list[Metric]:
    procs = int(os.environ.get("EDGEFLEET_BENCH_INGEST_PROCS", "2"))
    messages = int(os.environ.get("EDGEFLEET_BENCH_INGEST_MESSAGES", "100000"))
    client = os.environ.get("EDGEFLEET_BENCH_INGEST_CLIENT", "lean")
    profile = os.environ.get("EDGEFLEET_BENCH_INGEST_PROFILE", "")
    per_device = messages // DEVICES
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        broker = FleetBroker(workdir / "mosquitto")
        broker.start()
        url, pg = _database(workdir)
        replicas, stores = [], []
        try:
            for i in range(procs):
                config = write_config(workdir / f"fleet-{i}.toml", database_url=url,
                                      data_dir=workdir / f"data-{i}", broker=broker,
                                      client_id=f"bench-ingest-{i}", batch_max=500,
                                      extra_ingest=f'client = "{client}"\n')
                entry = ("-m", "bench.profile_ingest", profile) if profile else ("-m", "edgefleet")
                replicas.append(IngestProcess(config, workdir / f"ingest-{i}.log", entry=entry))
                stores.append(workdir / f"data-{i}" / "telemetry.db")
            for r in replicas:
                r.start()
            # Warm-up (not timed): sessions subscribed, every device registered once.
            deadline = time.monotonic() + 60
            while not all(r.log.exists() and "ingest subscribed" in r.log.read_text()
                          for r in replicas):
                if time.monotonic() > deadline:
                    raise SystemExit("ingest bench: the ingest processes never subscribed")
                time.sleep(0.1)
            warm = _publish(broker, workdir, range(1, 2))
            stored = _Stored(stores)
            wait_for_count(stored, warm, stall_s=60, what="warm-up")
            for r in replicas:
                r.stop()  # clean disconnect: the sessions stay and queue the backlog
            subprocess.run([MOSQUITTO_SUB, "-h", broker.host, "-p", str(broker.port), "-q",
                            "1", "-c", "-i", "bench-c-ref", "-x", "3600", "-V", "mqttv5",
                            "-t", "edgefleet/v1/#", "-W", "1"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            _floor(broker, 0)
            backlog = _publish(broker, workdir, range(2, per_device + 2))
            print(f"  backlog of {backlog:,} messages queued for ingest and for mosquitto_sub",
                  flush=True)
            c_rate = _c_client_rate(broker, backlog)
            floor_rate = _floor(broker, backlog)

            started = time.perf_counter()
            for r in replicas:
                r.start()
            target = warm + backlog
            while stored() <= warm:
                time.sleep(0.01)
            first = time.perf_counter()
            base = stored()
            pids = [r.proc.pid if r.proc is not None else None for r in replicas]
            cpu_before = [_cpu_s(pid) for pid in pids]
            broker_before = _cpu_s(broker.pid)
            wait_for_count(stored, target, stall_s=60, what="ingest backlog",
                           interval=0.02)
            done = time.perf_counter()
            cpu = sum(_cpu_s(pid) for pid in pids) - sum(cpu_before)
            broker_cpu = _cpu_s(broker.pid) - broker_before
            rate = (target - base) / (done - first)
            wall = backlog / (done - started)
            _check_exactly_once(stores, per_device + 1)
            if broker.dropped_outgoing():
                raise SystemExit("ingest bench: the broker dropped messages")
        finally:
            for r in replicas:
                r.stop()
            broker.stop()
            if pg is not None:
                pg.stop()  # type: ignore[attr-defined]
    db_kind = url.split(":", 1)[0]
    print(f"  {procs} ingest process(es), {client} client, {db_kind}: {rate:,.0f} msgs/s "
          f"from the first durable message ({wall:,.0f} msgs/s including process start-up); "
          f"mosquitto_sub -q 1: {c_rate:,.0f} msgs/s; ratio {rate / c_rate:.2f}; "
          f"lean client alone (Python floor): {floor_rate:,.0f} msgs/s, "
          f"{floor_rate / c_rate:.2f} of the C client", flush=True)
    print(f"  CPU while draining: ingest {cpu / (target - base) * 1e6:.0f} µs/msg "
          f"({cpu / (done - first):.2f} cores), broker {broker_cpu / (target - base) * 1e6:.0f} "
          f"µs/msg, over {done - first:.1f} s; load average {os.getloadavg()[0]:.1f}",
          flush=True)
    ref = (f"{backlog:,} queued telemetry messages from {DEVICES:,} devices behind {GATEWAYS} "
           f"gateways, {procs} ingest processes ({client} MQTT client) on one shared subscription, "
           f"embedded store + "
           f"{db_kind} accounting, ack after commit; 2 cores shared with the broker")
    return [
        Metric("ingest_msgs_per_s", round(rate), "msgs/s", GOAL_RATE, "higher", ref),
        Metric("ingest_vs_c_client", round(rate / c_rate, 3), "ratio", GOAL_RATIO, "higher",
               f"ingest rate / mosquitto_sub -q 1 draining the same backlog from the same "
               f"broker in the same run ({c_rate:,.0f} msgs/s); Python floor in the same run "
               f"(ingest's lean MQTT client alone, wire decode + PUBACK, one process): "
               f"{floor_rate:,.0f} msgs/s = {floor_rate / c_rate:.2f} of the C client"),
    ]


if __name__ == "__main__":
    from bench.results import table

    print(table(run()))
