"""Webhook signatures and retry timing, as pure functions.

Header ``X-Edgefleet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``:
the timestamp is signed with the body so a captured request cannot be replayed later than the
receiver's tolerance. Receivers verify with :func:`verify` (constant-time compare)."""

from __future__ import annotations

import hashlib
import hmac
import random

__all__ = ["SIGNATURE_HEADER", "backoff_s", "sign", "verify"]

SIGNATURE_HEADER = "X-Edgefleet-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance_s: int = 300) -> bool:
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def backoff_s(attempts: int, base_s: float = 2.0, cap_s: float = 600.0,
              rng: random.Random | None = None) -> float:
    """Seconds before the next try after ``attempts`` failures: exponential, capped, with up
    to 25 % jitter so a receiver coming back is not hit by every sender at once."""
    delay = min(cap_s, base_s * 2 ** min(attempts - 1, 30))
    jitter = (rng or random).uniform(0, delay * 0.25)
    return float(min(cap_s, delay + jitter))
