"""Secrets the fleet must be able to read back (a webhook's HMAC key: it signs with it) kept
sealed at rest, so a copy of the database or a backup does not hand out the keys that outside
systems (a 114 fire-dispatch bridge, a utility's SCADA) trust.

The sealing key is derived from the settings' ``secret_key`` with HKDF-SHA256 under a label of
its own, so it is never the key that peppers tokens, and no second secret has to be managed.
Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) authenticates as well as encrypts: a
value sealed under another installation's key, or altered in the database, fails to open with
:class:`SealError` instead of signing with garbage. Rotating ``secret_key`` therefore means
re-creating the webhooks (their receivers need the new secret anyway).
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["SealError", "SecretBox"]

_LABEL = b"edgefleet/fleet/webhook-secrets/v1"


class SealError(ValueError):
    """A sealed value cannot be opened with this installation's key."""


class SecretBox:
    """Seal and open short secrets under a key derived from the fleet's ``secret_key``."""

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ValueError("a secret key is required to seal secrets")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=_LABEL).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def __repr__(self) -> str:  # never show key material, even in a traceback
        return "SecretBox(<sealed>)"

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise SealError("the sealed secret does not open with this installation's "
                            "secret_key (was the key changed?)") from exc
