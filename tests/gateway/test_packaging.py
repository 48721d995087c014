"""The systemd unit that runs the gateway on a Pi: what a technician installs from the package."""

from __future__ import annotations

import configparser
import shlex
import tomllib
from importlib.resources import files
from pathlib import Path, PurePosixPath

import pytest

from gateway.config import GatewaySection, load_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "gateway" / "edgefleet-gateway.service"


def unit() -> configparser.ConfigParser:
    # systemd units are INI-like; repeated keys (DeviceAllow=) need strict=False
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are CamelCase
    parser.read_string(UNIT.read_text(encoding="utf-8"), str(UNIT))
    return parser


def all_values(key: str) -> list[str]:
    """Every value of a key that may repeat (configparser keeps only the last)."""
    return [line.split("=", 1)[1].strip() for line in UNIT.read_text().splitlines()
            if line.startswith(f"{key}=")]


def test_the_unit_parses_with_unit_service_and_install_sections() -> None:
    assert set(unit().sections()) == {"Unit", "Service", "Install"}
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_it_runs_the_gateway_on_the_config_in_etc() -> None:
    argv = shlex.split(unit()["Service"]["ExecStart"])
    assert argv[0] == "/opt/edgefleet/venv/bin/edgefleet"
    assert argv[1:] == ["gateway", "run", "/etc/edgefleet/gateway.toml"]


def test_it_runs_as_a_non_root_user_who_may_open_serial_ports() -> None:
    service = unit()["Service"]
    assert service.get("User") not in (None, "", "root", "0")
    assert "dialout" in service["SupplementaryGroups"].split()
    assert service["NoNewPrivileges"] == "yes"
    assert service["CapabilityBoundingSet"] == ""


def test_it_restarts_forever_and_stops_gracefully_on_sigterm() -> None:
    service = unit()["Service"]
    assert (service["Restart"], service["RestartSec"]) == ("always", "2")
    assert unit()["Unit"]["StartLimitIntervalSec"] == "0"
    assert (service["KillSignal"], service["TimeoutStopSec"]) == ("SIGTERM", "20")


def test_no_watchdog_because_the_service_never_notifies_systemd() -> None:
    service = unit()["Service"]
    assert "WatchdogSec" not in service
    assert service["Type"] != "notify"
    sources = "".join(p.read_text() for p in (ROOT / "gateway").glob("*.py"))
    assert "NOTIFY_SOCKET" not in sources and "sd_notify" not in sources


def test_only_the_state_directory_is_writable_and_it_holds_the_outbox() -> None:
    service = unit()["Service"]
    assert service["ProtectSystem"] == "strict"
    state = PurePosixPath("/var/lib") / service["StateDirectory"]
    assert all_values("ReadWritePaths") == [str(state)]
    default = PurePosixPath(str(GatewaySection.model_fields["storage"].default))
    site = PurePosixPath(str(load_config(ROOT / "gateway/examples/site.toml").gateway.storage))
    assert default.is_relative_to(state) and site.is_relative_to(state)


def test_devices_are_closed_except_serial_ports() -> None:
    service = unit()["Service"]
    assert service["DevicePolicy"] == "closed"
    assert "PrivateDevices" not in service  # it would hide /dev/ttyUSB*
    assert sorted(all_values("DeviceAllow")) == ["char-ttyACM rw", "char-ttyAMA rw",
                                                 "char-ttyUSB rw"]


@pytest.mark.parametrize(("key", "value"), [
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
])
def test_sandbox_settings(key: str, value: str) -> None:
    assert unit()["Service"][key] == value


def test_the_ftdi_latency_udev_rule_is_documented_in_the_unit() -> None:
    assert 'DRIVER=="ftdi_sio", ATTR{latency_timer}="1"' in UNIT.read_text()


def test_the_unit_ships_as_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "edgefleet-gateway.service" in pyproject["tool"]["setuptools"]["package-data"][
        "gateway"]
    assert (files("gateway") / "edgefleet-gateway.service").is_file()
