"""Ingest: the one owner of the fleet's MQTT subscription.

Messages arrive on an MQTT 5 shared subscription with a persistent session; each is checked
against the contract, de-duplicated by (device, epoch, seq), written durably (telemetry sink,
accounting and the registry/alarm services in one database transaction) and only then
acknowledged to the broker, so a crash at any point loses nothing and doubles nothing.
"""
