"""The Python floor beside ``ingest_vs_c_client`` (bench/bench_ingest.py): how fast one Python
process on the ingest's own MQTT client (:class:`fleet.ingest.leanclient.LeanClient`, the
:mod:`fleet.ingest.wire` codec) drains a backlog when it does nothing else: decode each PUBLISH,
PUBACK it. No JSON, no validation, no de-duplication, no store; acknowledgements go out every 64
messages in one write (ingest acknowledges per committed batch).

Usage: python -m bench.lean_floor HOST PORT CLIENT_ID TOPIC_FILTER COUNT [subscribe-only]

With ``subscribe-only`` it makes the persistent session (subscribed, no messages expected) and
leaves, so the broker queues a backlog for it; without, it resumes that session, takes COUNT
messages and prints the rate, timed from the connect to the last PUBACK written.
"""

from __future__ import annotations

import sys
import threading
import time

from fleet.ingest.leanclient import LeanClient

ACK_EVERY = 64


def main(argv: list[str]) -> int:
    host, port, client_id, topic, count = argv[0], int(argv[1]), argv[2], argv[3], int(argv[4])
    subscribe_only = len(argv) > 5 and argv[5] == "subscribe-only"
    subscribed, done = threading.Event(), threading.Event()
    pending: list[int] = []
    received = 0
    client: LeanClient

    def on_message(_topic: str, _payload: bytes, packet_id: int, qos: int) -> None:
        nonlocal received
        received += 1
        if qos:
            pending.append(packet_id)
        if len(pending) >= ACK_EVERY or received >= count:
            client.ack_many(pending, client.connection)
            pending.clear()
        if received >= count:
            done.set()

    client = LeanClient(host, port, client_id, keepalive_s=60, session_expiry_s=3600,
                        receive_maximum=1000, subscriptions=[(topic, 1)],
                        on_message=on_message, on_connect=lambda _present: None,
                        on_subscribe=lambda ok: subscribed.set(),
                        on_disconnect=lambda reason: None)
    start = time.perf_counter()
    client.start()
    if subscribe_only:
        ok = subscribed.wait(30)
        client.stop()
        return 0 if ok else 1
    if not done.wait(600):
        client.stop()
        print(f"lean floor: only {received} of {count} messages", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    client.stop()
    print(f"{count / elapsed:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
