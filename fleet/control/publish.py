"""Publishing one command to the broker: a short-lived MQTT connection with the fleet's ingest
credentials (the same broker, the same TLS identity), QoS 1, returned once the broker has it.

Commands are rare (a person pressed a button), so a connection per command costs nothing worth
a long-lived client, and leaves nothing running to stop."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from fleet.core.errors import FleetError
from fleet.ingest.settings import IngestSettings

__all__ = ["BrokerUnavailable", "NoBroker", "publish_command"]

log = logging.getLogger(__name__)
TIMEOUT_S = 5.0


class BrokerUnavailable(FleetError):
    status = 503
    code = "broker-unavailable"


class NoBroker(BrokerUnavailable):
    """This installation has no broker configured: a state of the fleet, not a server fault."""

    status = 409
    code = "no-broker"


def publish_command(settings: IngestSettings, topic: str, body: dict[str, Any]) -> None:
    if not settings.enabled:
        raise NoBroker("this fleet has no broker configured ([ingest] host)")
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id=f"fleet-cmd-{uuid.uuid4().hex[:12]}", protocol=paho.MQTTv5)
    if settings.ca_file is not None:
        client.tls_set(ca_certs=str(settings.ca_file), certfile=str(settings.cert_file),
                       keyfile=str(settings.key_file))
    try:
        client.connect(settings.host, settings.port, keepalive=30)
        client.loop_start()
        info = client.publish(topic, json.dumps(body, separators=(",", ":")), qos=1)
        info.wait_for_publish(TIMEOUT_S)
        if not info.is_published():
            raise BrokerUnavailable(f"the broker did not accept the command within {TIMEOUT_S} s")
    except (OSError, ValueError, RuntimeError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {settings.host}:{settings.port}: "
                                f"{exc}") from None
    finally:
        client.disconnect()
        client.loop_stop()
    log.info("command published on %s", topic)
