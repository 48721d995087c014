"""Telemetry: where device readings go after ingest, behind one :class:`TelemetrySink` interface.

Two sinks: :class:`InfluxSink` (InfluxDB's v2 write API through influxdb-client; production) and
:class:`EmbeddedStore` (one SQLite file with retention and downsampling; the demo, small sites and
the dashboard's recent-history charts). Ingest writes a batch, the sink returns once the batch is
durable, and only then does ingest acknowledge the messages to the broker.

The InfluxDB sink lives in :mod:`fleet.telemetry.influx` (imported only where configured: the
client library is heavy).
"""

from fleet.telemetry.embedded import EmbeddedStore
from fleet.telemetry.sink import Reading, SinkError, TelemetrySink

__all__ = ["EmbeddedStore", "Reading", "SinkError", "TelemetrySink"]
