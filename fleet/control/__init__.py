"""Device commands from the fleet: reset a latched alarm, write a threshold. Published to the
device's gateway on ``edgefleet/v1/<gw>/cmd/<device>/<action>`` (contracts.mqtt.command_topic),
answered by the gateway on ``edgefleet/v1/<gw>/ack``, which ingest (the one owner of the fleet's
MQTT subscription) hands to :func:`fleet.control.service.record_ack`.

No table of its own: a command and its answer are audit rows (``entity_type="command"``, the
command id as ``entity_id``, prefixed with the device's id so one device's commands are one
indexed prefix match), which also makes every command attributable to a person.
"""
