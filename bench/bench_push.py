"""Alarm push latency, MQTT publish -> SSE event at a browser (`alarm_push_latency_p99_s`).

Mosquitto on the fleet's generated configuration; the fleet app under uvicorn with ingest in its
lifespan (SQLite, embedded defaults) and the live-push feed; a browser-like SSE client logged in
as an admin (devices first heard on MQTT are unassigned, which only admins see). A QoS 1 publisher
sends ALARMS alarms of distinct ids, one every SPACING_S; each latency is the client's receipt of
the ``alarm.raised`` event minus the moment just before ``publish``. Goal: p99 ≤ 0.25 s.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.results import Metric

ALARMS = 200
SPACING_S = 0.05
GOAL_S = 0.25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run() -> list[Metric]:
    # every alarm is logged at WARNING by the fleet (as it should be): not 200 lines here
    fleet_log = logging.getLogger("fleet")
    level = fleet_log.level
    fleet_log.setLevel(logging.ERROR)
    try:
        return _run()
    finally:
        fleet_log.setLevel(level)


def _run() -> list[Metric]:
    import paho.mqtt.client as paho
    import uvicorn

    from contracts.mqtt import device_topic, dumps
    from fleet.app import create_app
    from fleet.auth import service as auth
    from fleet.auth.models import User
    from fleet.core.db import Database
    from fleet.core.migrate import upgrade
    from fleet.core.settings import load_settings
    from tests.fleet.ingest_harness import FleetBroker

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = FleetBroker(work / "mosquitto")
        broker.start()
        url = f"sqlite:///{work / 'fleet.db'}"
        upgrade(url)
        settings = load_settings(None, data_dir=work, database_url=url,
                                 secret_key=secrets.token_urlsafe(48), run_timers=False,
                                 argon2_time_cost=1, argon2_memory_kib=1024,
                                 ingest={"host": broker.host, "port": broker.port,
                                         "client_id": "bench-push", "batch_wait_s": 0.005})
        db = Database.from_url(url)
        with db.transaction() as s:
            auth.create_user(s, settings, username="admin", password=secrets.token_urlsafe(16),
                             role="admin")
            s.flush()
            admin = s.query(User).one()
            token = auth.issue_token(s, settings, admin, kind="session")
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(settings, database=db),
                                               host="127.0.0.1", port=port,
                                               log_level="warning",
                                               timeout_graceful_shutdown=0.5))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)

        received: dict[str, float] = {}
        connected = threading.Event()

        def listen() -> None:
            with httpx.Client(timeout=httpx.Timeout(5, read=None)) as client, client.stream(
                    "GET", f"http://127.0.0.1:{port}/api/v1/notify/alarms",
                    headers={"Authorization": f"Bearer {token}"}) as r:
                for line in r.iter_lines():
                    if line.startswith(": connected"):
                        connected.set()
                    elif line.startswith("data: "):
                        data: dict[str, Any] = json.loads(line[6:])
                        if data["action"] == "alarm.raised":
                            received.setdefault(data["alarm"]["alarm_key"], time.perf_counter())
                    if len(received) >= ALARMS:
                        return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert connected.wait(10), "SSE stream did not open"
        time.sleep(1.0)  # ingest subscribed and settled

        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-push-pub",
                          protocol=paho.MQTTv5)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        sent: dict[str, float] = {}
        for n in range(ALARMS):
            key = f"fire-{n % 8}:smoke:1:{n}"
            body = {"v": 1, "device": f"fire-{n % 8}", "class": "fire",
                    "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "epoch": "bench",
                    "seq": n + 1, "alarm_id": key, "type": "smoke", "state": "raised",
                    "severity": "critical"}
            sent[key] = time.perf_counter()
            pub.publish(device_topic("gw-push", f"fire-{n % 8}", "alarm"), dumps(body), qos=1)
            time.sleep(SPACING_S)
        listener.join(30)
        pub.loop_stop()
        pub.disconnect()
        server.should_exit = True
        thread.join(10)
        db.dispose()
        broker.stop()
    latencies = sorted(received[k] - sent[k] for k in sent if k in received)
    if len(latencies) < ALARMS:
        raise RuntimeError(f"only {len(latencies)} of {ALARMS} alarms reached the SSE client")
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"  alarm push: median {latencies[len(latencies) // 2] * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms over {ALARMS} alarms")
    return [Metric("alarm_push_latency_p99_s", p99, "s", GOAL_S, "lower",
                   "MQTT publish (QoS 1) of an alarm -> SSE event at an HTTP client; Mosquitto, "
                   "ingest in the fleet app, SQLite, one alarm every 50 ms")]
