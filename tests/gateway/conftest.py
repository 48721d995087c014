"""Gateway fixtures: a real Mosquitto on a free loopback port, plain or with mutual TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.mosquitto import FLEET_IDENTITY, Broker, Pki, make_pki

GATEWAYS = ("gw-a", "gw-b")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """Anonymous Mosquitto; `broker.stop()` / `broker.start()` reuse the same port."""
    b = Broker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Throwaway CA, server cert, and client certs with CN = gateway id (plus the fleet's)."""
    return make_pki(tmp_path_factory.mktemp("pki"), (*GATEWAYS, FLEET_IDENTITY))


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    """Mosquitto with require_certificate, identity-as-username and per-gateway ACLs."""
    b = Broker(tmp_path / "mosquitto-tls", pki=pki)
    b.start()
    yield b
    b.stop()
