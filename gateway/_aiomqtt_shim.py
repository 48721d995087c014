"""The one place that reaches into aiomqtt's private API: a client that keeps PUBACK reason codes.

Why a subclass of aiomqtt.Client rather than paho directly: aiomqtt already owns the hard part of
running paho on an asyncio loop (socket reader/writer registration, keepalive task, TLS pending
bytes, the CONNECT in an executor) and the architecture names it. Its one gap is that
``Client.publish()`` drops the PUBACK reason code (aiomqtt 2.5.1 ``_on_publish`` only sets an
event). :class:`PubackClient` adds ``publish_tracked()``, which calls paho's ``publish()`` itself
to learn the message id and returns a future that ``_on_publish`` resolves with the reason code.
No callback can fire between paho's ``publish()`` returning and the future being registered:
aiomqtt registers paho's socket I/O with the event loop (``on_socket_register_write``), so paho
never writes or reads synchronously inside ``publish()``, and every ``on_publish`` runs from a
later loop callback. It also skips aiomqtt's per-call bookkeeping (an Event, a context manager
and an O(n) scan of pending calls per publish), which matters at 10k+ messages/s.

It relies on these private names of aiomqtt 2.5 (:data:`PRIVATE_API`): ``Client._client`` (the
paho client), ``Client._loop``, ``Client._disconnected`` (a future set when the connection
ends), and the paho callbacks ``_on_publish`` / ``_on_connect`` that aiomqtt installs.
:func:`check_private_api` verifies them on a real instance; a test calls it, so an aiomqtt
upgrade that renames one fails that test by name instead of failing in the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["PRIVATE_API", "PubackClient", "check_private_api", "reason_name"]

#: Private attributes of aiomqtt.Client this module depends on, with the type each must have.
PRIVATE_API: dict[str, type | tuple[type, ...]] = {
    "_client": paho.Client,
    "_loop": asyncio.AbstractEventLoop,
    "_disconnected": asyncio.Future,
}
#: aiomqtt.Client methods this module overrides and calls with super(); paho calls them with
#: the signatures below (MQTT 5, paho CallbackAPIVersion.VERSION2).
OVERRIDDEN = ("_on_publish", "_on_connect")


def check_private_api(client: aiomqtt.Client) -> list[str]:
    """What of :data:`PRIVATE_API` this aiomqtt no longer provides (empty when all is well)."""
    missing = []
    for name, kind in PRIVATE_API.items():
        if not isinstance(getattr(client, name, None), kind):
            missing.append(f"aiomqtt.Client.{name} is not a {kind}")
    for name in OVERRIDDEN:
        if not callable(getattr(aiomqtt.Client, name, None)):
            missing.append(f"aiomqtt.Client.{name} is gone")
    paho_client = getattr(client, "_client", None)
    if isinstance(paho_client, paho.Client) and (
            paho_client.on_publish is None or paho_client.on_connect is None):
        missing.append("aiomqtt no longer installs paho's on_publish/on_connect")
    return missing


def reason_name(code: ReasonCode) -> str:
    try:
        return code.getName()
    except (KeyError, ValueError):
        return f"reason code {code.value}"


class PubackClient(aiomqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pubacks: dict[int, asyncio.Future[ReasonCode]] = {}
        self.connack_properties: Properties | None = None

    def publish_tracked(self, topic: str, payload: bytes, qos: int,
                        retain: bool) -> asyncio.Future[ReasonCode]:
        """Hand one PUBLISH to paho; the future resolves with the PUBACK's reason code (QoS 0:
        success once written) or fails with MqttError when the connection is lost first."""
        info = self._client.publish(topic, payload, qos, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        fut: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._pubacks[info.mid] = fut
        return fut

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Properties) -> None:
        fut = self._pubacks.pop(mid, None)
        if fut is None:  # one of aiomqtt's own publish() calls
            super()._on_publish(client, userdata, mid, reason_code, properties)
        elif not fut.done():
            fut.set_result(reason_code)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None = None) -> None:
        self.connack_properties = properties
        super()._on_connect(client, userdata, flags, reason_code, properties)

    @property
    def receive_maximum(self) -> int:
        """The broker's Receive Maximum: how many QoS 1 PUBLISHes may await a PUBACK."""
        value = getattr(self.connack_properties, "ReceiveMaximum", 65535)
        return int(value)

    async def __aenter__(self) -> PubackClient:
        await super().__aenter__()
        self._disconnected.add_done_callback(self._fail_pending)
        return self

    def _fail_pending(self, disconnected: asyncio.Future[None]) -> None:
        cause = None if disconnected.cancelled() else disconnected.exception()
        pending, self._pubacks = self._pubacks, {}
        for fut in pending.values():
            if not fut.done():
                error = aiomqtt.MqttError(f"connection lost before PUBACK: {cause}")
                error.__cause__ = cause
                fut.set_exception(error)

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a power cut would (tests, drills)."""
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
