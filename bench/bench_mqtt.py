"""MQTT publishing: the gateway's durable outbox through `MqttSession.pump()` into a real
Mosquitto (the test fixture's broker, own config, loopback), QoS 1, every PUBACK awaited.

- `gateway_publish_qos1_msgs_per_s`: a backlog of PUBLISH_N messages in the outbox, broker up;
  timed from the pump's start until the outbox is empty (every message PUBACKed and deleted).
- `gateway_replay_msgs_per_s`: REPLAY_N messages stored while the broker is down (the session is
  already backing off), then the broker starts; timed from the broker's start until a separate
  fleet subscriber has received every (device, seq).

Publisher, broker and subscriber share the machine's cores, as the field notes measured. The
subscriber is its own process (paho), as the fleet's ingest is: in this process it would take the
publisher's GIL and halve the replay rate (measured ~4.2k vs ~9k msgs/s).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_outbox import telemetry
from bench.results import Metric
from gateway.mqtt import Backoff, MqttSession
from gateway.outbox import Outbox
from tests.gateway.mosquitto import Broker

PUBLISH_N, REPLAY_N, BATCH, WINDOW = 30_000, 200_000, 500, 100
GOAL = 10_000.0
GW = "gw-bench"


# The fleet side of the replay: a persistent QoS 1 session (its subscription and queue outlive the
# broker restart), counting distinct payloads; prints "ready" once subscribed, then the wall time
# at which it holds them all.
FLEET = """
import sys, threading, time
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
port, n, topic = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
seen, done, subscribed = set(), threading.Event(), threading.Event()
def on_message(client, userdata, msg):
    seen.add(msg.payload)
    if len(seen) >= n:
        done.set()
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-fleet", protocol=paho.MQTTv5)
c.max_inflight_messages_set(0)
c.reconnect_delay_set(0.05, 0.5)
c.on_message = on_message
c.on_connect = lambda client, *a: client.subscribe(topic, 1)
c.on_subscribe = lambda *a: subscribed.set()
props = Properties(PacketTypes.CONNECT)
props.SessionExpiryInterval = 3600
c.connect("127.0.0.1", port, clean_start=False, properties=props)
c.loop_start()
subscribed.wait(10)
print("ready", flush=True)
if not done.wait(600):
    sys.exit(f"only {len(seen)} distinct messages of {n}")
print(time.time(), flush=True)
c.disconnect()
c.loop_stop()
"""


def _fill(outbox: Outbox, total: int) -> None:
    for start in range(0, total, BATCH):
        outbox.put_many([telemetry(i, GW) for i in range(start, min(total, start + BATCH))])


def _session(broker: Broker) -> MqttSession:
    return MqttSession(broker.host, broker.port, gateway_id=GW, window=WINDOW,
                       backoff=Backoff(0.05, 0.2), status_interval=None)


async def _publish(broker: Broker, outbox: Outbox) -> tuple[float, MqttSession]:
    session = _session(broker)
    stop = asyncio.Event()
    start = time.perf_counter()
    pump = asyncio.create_task(session.pump(outbox, stop))
    while outbox.stats().depth:
        if pump.done():
            pump.result()
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    stop.set()
    await pump
    return PUBLISH_N / elapsed, session


async def _replay(broker: Broker, outbox: Outbox,
                  fleet: subprocess.Popen[str]) -> tuple[float, MqttSession]:
    assert fleet.stdout is not None
    session = _session(broker)
    stop = asyncio.Event()
    pump = asyncio.create_task(session.pump(outbox, stop))
    while session.stats.connect_failures == 0:  # backing off against the dead broker
        await asyncio.sleep(0.01)
    start = time.time()
    drained_at: list[float] = []

    async def watch_outbox() -> None:  # when the gateway's side is done (all PUBACKed)
        while outbox.stats().depth:
            await asyncio.sleep(0.05)
        drained_at.append(time.time())

    watcher = asyncio.create_task(watch_outbox())
    await asyncio.to_thread(broker.start)
    line = await asyncio.to_thread(fleet.stdout.readline)
    if not line.strip():
        raise RuntimeError(f"the fleet subscriber failed: exit {fleet.wait()}")
    elapsed = float(line) - start
    await watcher
    session.replay_drain_rate = REPLAY_N / (drained_at[0] - start)  # type: ignore[attr-defined]
    stop.set()
    await pump
    return REPLAY_N / elapsed, session


def publish_rate(tmp: Path) -> tuple[float, MqttSession]:
    broker = Broker(tmp / "broker-publish")
    broker.start()
    try:
        with Outbox(tmp / "publish.db", max_bytes=1 << 40) as outbox:
            _fill(outbox, PUBLISH_N)
            return asyncio.run(_publish(broker, outbox))
    finally:
        broker.stop()


def replay_rate(tmp: Path) -> tuple[float, MqttSession]:
    # persistence: the fleet's subscription outlives the broker restart, as in production
    broker = Broker(tmp / "broker-replay", persistence=True)
    broker.start()
    fleet = subprocess.Popen(
        [sys.executable, "-c", FLEET, str(broker.port), str(REPLAY_N),
         f"edgefleet/v1/{GW}/+/telemetry"], stdout=subprocess.PIPE, text=True)
    try:
        assert fleet.stdout is not None
        if fleet.stdout.readline().strip() != "ready":
            raise RuntimeError("the fleet subscriber did not subscribe")
        broker.stop()
        with Outbox(tmp / "replay.db", max_bytes=1 << 40) as outbox:
            _fill(outbox, REPLAY_N)
            return asyncio.run(_replay(broker, outbox, fleet))
    finally:
        fleet.kill()
        fleet.wait()
        broker.stop()


def run() -> list[Metric]:
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp_name:
        tmp = Path(tmp_name)
        publish, s1 = publish_rate(tmp)
        print(f"  publish {PUBLISH_N:,} from the outbox: {publish:,.0f} msgs/s "
              f"(PUBACK latency p50 {s1.stats.snapshot()['publish_latency_p50_ms']} ms)",
              flush=True)
        replay, s2 = replay_rate(tmp)
        drain = s2.replay_drain_rate  # type: ignore[attr-defined]
        print(f"  replay {REPLAY_N:,} after an outage: {replay:,.0f} msgs/s to the subscriber "
              f"(every distinct message received); the gateway's outbox was empty (all "
              f"PUBACKed) at {drain:,.0f} msgs/s", flush=True)
    window = f"window {WINDOW} (clamped to the broker's Receive Maximum, Mosquitto's 20)"
    return [
        Metric("gateway_publish_qos1_msgs_per_s", round(publish), "msgs/s", GOAL, "higher",
               f"{PUBLISH_N:,} queued telemetry (~230 B), outbox -> MqttSession -> Mosquitto, "
               f"QoS 1, every PUBACK awaited and acked in the outbox, {window}"),
        Metric("gateway_replay_msgs_per_s", round(replay), "msgs/s", GOAL, "higher",
               f"{REPLAY_N:,} messages stored while the broker was down, timed from broker "
               f"start to the last one at a QoS 1 subscriber (the outbox itself was empty "
               f"at {drain:,.0f} msgs/s), {window}"),
    ]


if __name__ == "__main__":
    from bench.results import table

    print(table(run()))
