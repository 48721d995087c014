"""MQTT publishing, measured against a C reference in the same run (rates differ between
machines; ratios to `mosquitto_pub` / `mosquitto_sub` on the same broker do not, much).

The broker is the test fixture's Mosquitto (own config, loopback) with `max_queued_messages 0`
and `max_queued_bytes 0`, so it never drops a QoS 1 message for a slow subscriber (FIELD-NOTES);
every run checks that every message arrived.

- `gateway_publish_qos1_msgs_per_s`: PUBLISH_N telemetry messages waiting in the gateway's
  outbox, `MqttSession.pump()` delivering them at QoS 1, timed until the outbox is empty (every
  PUBACK received and recorded). `gateway_publish_vs_c_client` divides it by the rate of
  `mosquitto_pub -l -q 1` sending the same payloads, one per line, to the same broker (timed
  from its start to its exit, after its last PUBACK). Median of ROUNDS runs each, alternating.
- `gateway_publish_tls_vs_c_client`: the same two publish runs over TLS, to a broker that
  requires client certificates (the gateway's default in the field), both with the gateway's
  certificate.
- `gateway_replay_msgs_per_s`: a REPLAY_N-message backlog in the outbox, replayed to a live
  `mosquitto_sub -q 1` subscriber, timed from the pump's start until the subscriber has every
  message (`-C`). `gateway_replay_vs_c_client` divides it by the rate at which the same broker
  delivers a `mosquitto_pub -l -q 1` burst of the same payloads to the same kind of subscriber.

Publisher, broker and subscriber share the machine's cores.

`mosquitto_pub -l -q 1` (Debian 2.0.11) exits before it has sent everything when stdin holds
much more than ~60,000 lines (measured here: 34,479 of 100,000 arrived, exit status 0), so the
C reference feeds it C_CHUNK lines per process, back to back, and the subscriber checks that
every line arrived.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.bench_outbox import telemetry
from bench.results import Metric
from gateway.mqtt import Backoff, MqttSession
from gateway.outbox import Outbox
from tests.gateway.mosquitto import Broker, make_pki, publish_once

PUBLISH_N, REPLAY_N, BATCH, WINDOW, ROUNDS = 30_000, 200_000, 500, 100, 3
C_CHUNK = 25_000
GOAL = 10_000.0
GW = "gw-bench"
TOPICS = f"edgefleet/v1/{GW}/+/telemetry"
C_TOPIC = f"edgefleet/v1/{GW}/c-client/telemetry"
PROBE = f"edgefleet/v1/{GW}/probe"
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"


def _fill(outbox: Outbox, total: int) -> None:
    for start in range(0, total, BATCH):
        outbox.put_many([telemetry(i, GW) for i in range(start, min(total, start + BATCH))])


def _lines(outbox: Outbox, stem: Path, total: int) -> list[Path]:
    """The C client's input: exactly the payloads the gateway sends, one per line, in files of
    C_CHUNK lines."""
    payloads: list[bytes] = []
    after = 0
    while rows := outbox.peek(10_000, after):
        payloads += [r.payload for r in rows]
        after = rows[-1].id
    if len(payloads) != total or any(b"\n" in p for p in payloads):
        raise RuntimeError(f"expected {total} one-line payloads")
    files = []
    for i in range(0, total, C_CHUNK):
        path = stem.with_suffix(f".{i // C_CHUNK:03d}")
        path.write_bytes(b"".join(p + b"\n" for p in payloads[i:i + C_CHUNK]))
        files.append(path)
    return files


def _c_burst(broker: Broker, files: list[Path]) -> subprocess.Popen[bytes]:
    """`mosquitto_pub -l -q 1` over the files, one process each, back to back; over TLS with
    the gateway's certificate when the broker has a PKI."""
    script = ('tls=(); [ -n "$CAFILE" ] && tls=(--cafile "$CAFILE" --cert "$CERT" --key "$KEY"); '
              'for f in "$@"; do "$MOSQUITTO_PUB" -h "$HOST" -p "$PORT" -q 1 -l -t "$TOPIC" '
              '"${tls[@]}" < "$f" || exit 1; done')
    ca, cert, key = _credentials(broker)
    env = {"MOSQUITTO_PUB": MOSQUITTO_PUB, "HOST": broker.host, "PORT": str(broker.port),
           "TOPIC": C_TOPIC, "CAFILE": ca or "", "CERT": cert or "", "KEY": key or "",
           "PATH": "/usr/bin:/bin"}
    return subprocess.Popen(["bash", "-c", script, "c-burst", *map(str, files)], env=env)


def _credentials(broker: Broker) -> tuple[str | None, str | None, str | None]:
    """CA, certificate and key of the gateway's identity on a TLS broker; Nones without TLS."""
    if broker.pki is None:
        return None, None, None
    cert = broker.pki.clients[GW]
    return str(broker.pki.ca), str(cert.cert), str(cert.key)


def _session(broker: Broker) -> MqttSession:
    ca, cert, key = _credentials(broker)
    return MqttSession(broker.host, broker.port, gateway_id=GW, window=WINDOW,
                       backoff=Backoff(0.05, 0.2), status_interval=None, ca_file=ca,
                       cert_file=cert, key_file=key)


async def _pump_until(broker: Broker, outbox: Outbox,
                      done: Callable[[], bool]) -> tuple[float, MqttSession]:
    session = _session(broker)
    stop = asyncio.Event()
    start = time.perf_counter()
    pump = asyncio.create_task(session.pump(outbox, stop))
    while not done():
        if pump.done():
            pump.result()
            raise RuntimeError("the pump stopped early")
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - start
    stop.set()
    await pump
    return elapsed, session


def _c_publish(broker: Broker, files: list[Path]) -> float:
    start = time.perf_counter()
    if _c_burst(broker, files).wait(300) != 0:
        raise RuntimeError("mosquitto_pub failed")
    return time.perf_counter() - start


class _LiveSubscriber:
    """`mosquitto_sub -q 1 -C n+1` on the data topics and a retained probe; output to a file.
    Ready once the probe arrived; done when it exits with every message."""

    def __init__(self, broker: Broker, topic: str, n: int, out: Path) -> None:
        publish_once(broker, PROBE, b"probe", retain=True)
        self.out, self.n = out, n
        self._file = out.open("wb")
        self.proc = subprocess.Popen(
            [MOSQUITTO_SUB, "-h", broker.host, "-p", str(broker.port), "-q", "1",
             "-C", str(n + 1), "-t", topic, "-t", PROBE], stdout=self._file)
        deadline = time.monotonic() + 10
        while out.stat().st_size == 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("mosquitto_sub did not subscribe")
            time.sleep(0.005)

    def wait(self, timeout: float = 300) -> float:
        """perf_counter() when it had every message; checks that they all arrived."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            got = len(set(self.out.read_bytes().splitlines()) - {b"probe"})
            raise RuntimeError(f"the subscriber got {got} of {self.n} messages") from None
        done = time.perf_counter()
        self._file.close()
        payloads = self.out.read_bytes().splitlines()
        data = {p for p in payloads if p != b"probe"}
        if len(data) != self.n:
            raise RuntimeError(f"the subscriber got {len(data)} distinct messages of {self.n}")
        return done


def outbox_empty(outbox: Outbox) -> Callable[[], bool]:
    return lambda: outbox.stats().depth == 0


def _median_rates(runs: list[float], n: int) -> float:
    return n / statistics.median(runs)


def publish_rates(tmp: Path, tls: bool = False) -> tuple[float, float, MqttSession]:
    """Gateway and C client publish rates (median of ROUNDS each, alternating); with tls, to a
    broker that requires client certificates, as in the field (the gateway's default)."""
    name = "tls" if tls else "publish"
    pki = make_pki(tmp / "pki", (GW,)) if tls else None
    broker = Broker(tmp / f"broker-{name}", pki=pki)
    broker.start()
    gateway_runs: list[float] = []
    c_runs: list[float] = []
    session: MqttSession | None = None
    try:
        for i in range(ROUNDS):
            with Outbox(tmp / f"{name}-{i}.db", max_bytes=1 << 40) as outbox:
                _fill(outbox, PUBLISH_N)
                if i == 0:
                    files = _lines(outbox, tmp / name, PUBLISH_N)
                c_runs.append(_c_publish(broker, files))
                elapsed, session = asyncio.run(_pump_until(broker, outbox, outbox_empty(outbox)))
                gateway_runs.append(elapsed)
    finally:
        broker.stop()
    assert session is not None
    return _median_rates(gateway_runs, PUBLISH_N), _median_rates(c_runs, PUBLISH_N), session


def replay_rates(tmp: Path) -> tuple[float, float]:
    broker = Broker(tmp / "broker-replay")
    broker.start()
    try:
        with Outbox(tmp / "replay.db", max_bytes=1 << 40) as outbox:
            _fill(outbox, REPLAY_N)
            files = _lines(outbox, tmp / "replay", REPLAY_N)

            sub = _LiveSubscriber(broker, C_TOPIC, REPLAY_N, tmp / "c-sub.out")
            start = time.perf_counter()
            pub = _c_burst(broker, files)
            c_rate = REPLAY_N / (sub.wait() - start)
            if pub.wait(60) != 0:
                raise RuntimeError("mosquitto_pub failed")

            sub = _LiveSubscriber(broker, TOPICS, REPLAY_N, tmp / "gw-sub.out")
            session = _session(broker)

            async def replay() -> float:
                stop = asyncio.Event()
                begin = time.perf_counter()
                pump = asyncio.create_task(session.pump(outbox, stop))
                done = await asyncio.to_thread(sub.wait)
                stop.set()
                await pump
                return REPLAY_N / (done - begin)

            gateway_rate = asyncio.run(replay())
    finally:
        broker.stop()
    return gateway_rate, c_rate


def run() -> list[Metric]:
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp_name:
        tmp = Path(tmp_name)
        publish, c_publish, session = publish_rates(tmp)
        print(f"  publish {PUBLISH_N:,} from the outbox: {publish:,.0f} msgs/s; mosquitto_pub "
              f"-l -q 1: {c_publish:,.0f} msgs/s; ratio {publish / c_publish:.3f} (PUBACK p50 "
              f"{session.stats.snapshot()['publish_latency_p50_ms']} ms)", flush=True)
        tls, c_tls, _ = publish_rates(tmp, tls=True)
        print(f"  the same over TLS (client certificates): {tls:,.0f} msgs/s; mosquitto_pub: "
              f"{c_tls:,.0f} msgs/s; ratio {tls / c_tls:.3f}", flush=True)
        replay, c_replay = replay_rates(tmp)
        print(f"  replay {REPLAY_N:,} to a live mosquitto_sub -q 1: {replay:,.0f} msgs/s; a "
              f"mosquitto_pub burst through the same broker: {c_replay:,.0f} msgs/s; ratio "
              f"{replay / c_replay:.3f} (every message received, both)", flush=True)
    window = f"window {WINDOW} (clamped to the broker's Receive Maximum, Mosquitto's 20)"
    return [
        Metric("gateway_publish_qos1_msgs_per_s", round(publish), "msgs/s", GOAL, "higher",
               f"{PUBLISH_N:,} queued telemetry (~230 B), outbox -> MqttSession -> Mosquitto, "
               f"QoS 1, every PUBACK awaited and acked in the outbox, {window}; median of "
               f"{ROUNDS}"),
        Metric("gateway_publish_vs_c_client", round(publish / c_publish, 3), "ratio", 0.5,
               "higher", f"gateway {publish:,.0f} msgs/s / mosquitto_pub -l -q 1 "
               f"{c_publish:,.0f} msgs/s, same payloads, same broker, same run"),
        Metric("gateway_publish_tls_vs_c_client", round(tls / c_tls, 3), "ratio", 0.5,
               "higher", f"the publish run over TLS with client certificates (the field's "
               f"configuration): gateway {tls:,.0f} msgs/s / mosquitto_pub -l -q 1 with the same "
               f"certificate {c_tls:,.0f} msgs/s, same broker, same run"),
        Metric("gateway_replay_msgs_per_s", round(replay), "msgs/s", GOAL, "higher",
               f"{REPLAY_N:,}-message backlog, pump start -> the last one at a live "
               f"mosquitto_sub -q 1 (every message checked), {window}"),
        Metric("gateway_replay_vs_c_client", round(replay / c_replay, 3), "ratio", 0.9,
               "higher", f"gateway replay {replay:,.0f} msgs/s / a mosquitto_pub -l -q 1 burst "
               f"delivered by the same broker to mosquitto_sub -q 1 {c_replay:,.0f} msgs/s"),
    ]


if __name__ == "__main__":
    from bench.results import table

    print(table(run()))
