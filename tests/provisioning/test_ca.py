"""The fleet CA: identities that fit one topic level, keys 0600 from the first byte and never in
the log, one role per name, revocation into the CRL."""

from __future__ import annotations

import datetime as dt
import logging
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning.ca import CAError, FleetCA, check_identity


@pytest.fixture
def ca(tmp_path: Path) -> FleetCA:
    return FleetCA.init(tmp_path / "ca")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_private_key_is_written_owner_only(ca: FleetCA) -> None:
    gw = ca.issue("gw-1", "gateway")
    srv = ca.issue("broker", "server", hosts=("localhost", "127.0.0.1"))
    assert _mode(ca.dir / "ca.key") == 0o600
    for row in (gw, srv):
        cert, key = ca.path(row)
        assert _mode(key) == 0o600
        assert _mode(cert) & 0o044  # certificates are public
    assert _mode(ca.dir) == 0o700


@pytest.mark.parametrize("identity", ["gw+1", "gw#", "site/gw-1", "gw\x00", "", " gw", "cmd",
                                      "x" * 65])
def test_an_identity_that_is_not_one_topic_level_is_refused_at_issue(
        ca: FleetCA, identity: str) -> None:
    with pytest.raises(CAError):
        ca.issue(identity, "gateway")
    assert ca.index() == []


def test_a_good_identity_is_accepted() -> None:
    assert check_identity("hcmc-d1-gw-017") == "hcmc-d1-gw-017"


def test_a_client_certificate_names_its_identity_and_is_for_client_auth(ca: FleetCA) -> None:
    row = ca.issue("gw-7", "gateway")
    cert = x509.load_pem_x509_certificate(ca.path(row)[0].read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-7"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.issuer == ca.cert.subject
    cert.verify_directly_issued_by(ca.cert)


def test_a_gateway_cannot_take_the_name_of_a_fleet_service(ca: FleetCA) -> None:
    ca.issue("fleet", "fleet")
    with pytest.raises(CAError, match="live fleet certificate"):
        ca.issue("fleet", "gateway")


def test_revocation_lands_in_the_crl_and_frees_the_name(ca: FleetCA) -> None:
    old = ca.issue("gw-2", "gateway")
    keep = ca.issue("gw-3", "gateway")
    ca.revoke("gw-2")
    crl = x509.load_pem_x509_crl(ca.crl_file.read_bytes())
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(old.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(keep.serial) is None
    assert ca.identities("gateway") == ["gw-3"]
    ca.issue("gw-2", "gateway")  # a replacement for the same gateway
    assert ca.identities("gateway") == ["gw-2", "gw-3"]
    with pytest.raises(CAError):
        ca.revoke("nobody")


def test_an_existing_ca_is_never_replaced(ca: FleetCA) -> None:
    before = (ca.dir / "ca.key").read_bytes()
    with pytest.raises(CAError):
        FleetCA.init(ca.dir)
    assert (ca.dir / "ca.key").read_bytes() == before


def test_no_key_material_reaches_the_log(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ca = FleetCA.init(tmp_path / "ca")
    rows = [ca.issue("gw-1", "gateway"), ca.issue("fleet", "fleet")]
    ca.revoke("gw-1")
    text = caplog.text
    assert "gw-1" in text  # the log does speak about the issue ...
    keys = [ca.dir / "ca.key", *(ca.path(r)[1] for r in rows)]
    for key in keys:       # ... but never shows a key, whole or any line of it
        assert "PRIVATE KEY" not in text
        for line in key.read_text().splitlines()[1:-1]:
            assert line not in text


def test_the_crl_is_renewed_on_demand_and_says_when_it_expires(ca: FleetCA) -> None:
    first = ca.crl_next_update()
    assert first is not None
    ca.write_crl(dt.timedelta(days=400))
    renewed = ca.crl_next_update()
    assert renewed is not None and renewed > first
