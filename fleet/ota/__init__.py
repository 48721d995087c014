"""Firmware releases (signed bundles the fleet verifies and serves) and update campaigns
(staged waves, a failure threshold that halts, hazard freezes, per-device progress)."""
