"""Alarms: the life-safety lane. Lifecycle, de-duplication by the gateway's alarm id, escalation."""
