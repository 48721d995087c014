"""The gateway's TOML config: what a technician sees from `edgefleet gateway check`."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from edgefleet.cli import cmd_gateway_check
from gateway.config import (
    ConfigError,
    GatewayConfig,
    TomlLocator,
    load_config,
    validate_config,
)
from gateway.config.schema import NODE_TRIAL_CONFIRM_S

EXAMPLES = Path(__file__).resolve().parents[2] / "gateway" / "examples"
FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"

# Line numbers matter: the error table below points into this text.
BASE = """\
[gateway]
id = "gw-1"

[mqtt]
host = "localhost"
tls = false

[[bus]]
name = "b1"
type = "rtu"
port = "/dev/ttyUSB0"

[[bus.device]]
address = 1
class = "fire"
id = "fire-1"

[[bus.device]]
address = 2
class = "flood"
id = "flood-2"

[[rule]]
when = { device = "fire-1", alarm = "smoke" }
then = { device = "flood-2", coil = 0, value = true }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(issue) for issue in caught.value.issues]


@pytest.mark.parametrize("name", ["demo.toml", "site.toml"])
def test_the_shipped_examples_load(name: str) -> None:
    config = load_config(EXAMPLES / name)
    assert config.bus and all(bus.device for bus in config.bus)


def test_demo_has_one_rtu_bus_with_the_four_classes_and_a_local_broker() -> None:
    config = load_config(EXAMPLES / "demo.toml")
    assert [bus.type for bus in config.bus] == ["rtu"]
    assert sorted(dev.device_class for _, dev in config.devices()) == [
        "air", "fire", "flood", "water"]
    assert (config.mqtt.host, config.mqtt.broker_port, config.mqtt.tls) == ("localhost", 1883,
                                                                           False)
    assert config.gateway.storage == EXAMPLES / "demo-state"  # relative to the file


def test_site_example_poll_plans_follow_class_defaults_and_overrides() -> None:
    config = load_config(EXAMPLES / "site.toml")
    riser, canal = config.bus
    assert riser.type == "rtu" and (riser.baudrate, riser.parity) == (19200, "E")
    lobby, _, kitchen, _ = riser.device
    assert riser.poll_plan(lobby).status_ms == 500  # fire: twice a second
    assert riser.poll_plan(kitchen).status_ms == 250  # overridden
    plan = canal.poll_plan(canal.device[1])
    assert (plan.status_ms, plan.telemetry_ms, plan.timeout_s, plan.max_backoff_s) == (
        1000, 2000, 1.0, 60)
    assert config.serial_input[0].parser_profile.name == "generic"
    assert config.rule[3].then.register_name == "sample_period"


def test_the_base_text_of_the_error_table_is_valid(tmp_path: Path) -> None:
    load_config(write(tmp_path, BASE))


BROKEN = [
    pytest.param("address = 2", "address = 248",
                 ["19: bus[0].device[1].address: Input should be less than or equal to 247"],
                 id="address out of range"),
    pytest.param("address = 2", "address = 1",
                 ["19: bus[0].device[1].address: address 1 is already used by device[0] "
                  "on this bus"], id="two devices at one address"),
    pytest.param('class = "flood"', 'class = "smoke"',
                 ["20: bus[0].device[1].class: unknown device class 'smoke'; the register maps "
                  "declare fire, flood, water, air"], id="unknown class"),
    pytest.param('id = "flood-2"', 'id = "fire-1"',
                 ["21: bus[0].device[1].id: device id 'fire-1' is already used by "
                  "bus[0].device[0]",
                  "25: rule[0].then.device: device 'flood-2' is not in this config; the action "
                  "needs a Modbus device from a [[bus.device]]"], id="duplicate device id"),
    pytest.param('alarm = "smoke"', 'alarm = "smok"',
                 ["24: rule[0].when.alarm: class fire has no alarm 'smok'; it has smoke, "
                  'heat_fixed, heat_rise, prealarm (or "any")'], id="rule names unknown alarm"),
    pytest.param('alarm = "smoke"', 'value = "lvl", above = 1',
                 ["24: rule[0].when.value: class fire has no input register 'lvl'; "
                  "see docs/registers.md"], id="rule names unknown value"),
    pytest.param("coil = 0", "coil = 5",
                 ["25: rule[0].then.coil: no coil 5; the coils are 0 (output)"],
                 id="rule names unknown coil"),
    pytest.param('coil = 0, value = true', 'register = "stage2", value = 12',
                 ["25: rule[0].then.value: 12 is outside stage2's range 0–10 m"],
                 id="rule writes a register out of range"),
    pytest.param("tls = false", 'tls = false\npassword = "Admin"',
                 ["7: mqtt.password: no default passwords: this one is empty or well known "
                  "(admin, password, public, mosquitto, edgefleet, changeme); set a unique "
                  "password, or use password_file"], id="default password refused"),
    pytest.param("tls = false", "tls = true",
                 [f"4: mqtt.{name}: required when tls = true (each gateway has its own client "
                  "certificate)" for name in ("cafile", "certfile", "keyfile")],
                 id="tls without certificates"),
    pytest.param('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nbaud = 9600',
                 ["12: bus[0].baud: Extra inputs are not permitted"], id="typo in a key"),
    pytest.param('type = "rtu"', 'type = "rs485"',
                 ["10: bus[0].type: type must be one of 'rtu', 'tcp', not 'rs485'"],
                 id="unknown bus type"),
    pytest.param('id = "flood-2"\n', "",
                 ["18: bus[0].device[1].id: Field required"], id="missing key: table line"),
    pytest.param('id = "gw-1"', 'id = "gw/1"',
                 ["2: gateway.id: String should match pattern '^[A-Za-z0-9_-]+$'"],
                 id="gateway id not topic-safe"),
    pytest.param('id = "flood-2"', "id = flood-2",
                 ["21: TOML syntax: Invalid value (column 6)"], id="TOML syntax error"),
]


@pytest.mark.parametrize(("old", "new", "expected"), BROKEN)
def test_a_broken_config_names_file_line_and_field(tmp_path: Path, old: str, new: str,
                                                   expected: list[str]) -> None:
    assert old in BASE
    path = write(tmp_path, BASE.replace(old, new, 1))
    assert errors_of(path) == [f"{path}:{line}" for line in expected]


def check_main(path: str) -> int:
    return cmd_gateway_check(argparse.Namespace(config=path))


def test_check_prints_ok_or_the_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    good = write(tmp_path, BASE)
    assert check_main(str(good)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {good}: gateway gw-1: 1 bus(es), 2 device(s), ")
    assert "1 rule(s)" in out
    bad = write(tmp_path, BASE.replace("address = 2", "address = 0"))
    assert check_main(str(bad)) == 1
    assert capsys.readouterr().err == (f"{bad}:19: bus[0].device[1].address: Input should be "
                                       "greater than or equal to 1\n")
    assert check_main(str(tmp_path / "absent.toml")) == 1
    assert "absent.toml:1: cannot read: No such file or directory" in capsys.readouterr().err


def test_secrets_never_appear_in_repr_or_str(tmp_path: Path) -> None:
    secret = "Xq7-correct-horse-battery"
    config = load_config(write(tmp_path, BASE.replace(
        "tls = false", f'tls = false\nusername = "gw-1"\npassword = "{secret}"')))
    assert config.mqtt.read_password() is not None
    assert config.mqtt.read_password().get_secret_value() == secret  # type: ignore[union-attr]
    for text in (repr(config), str(config), repr(config.mqtt), config.model_dump_json()):
        assert secret not in text


def test_password_file_is_relative_to_the_config_and_defaults_are_refused(tmp_path: Path
                                                                         ) -> None:
    config = load_config(write(tmp_path, BASE.replace(
        "tls = false", 'tls = false\npassword_file = "secrets/mqtt"')))
    assert config.mqtt.password_file == tmp_path / "secrets" / "mqtt"
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mqtt").write_text("changeme\n")
    with pytest.raises(ValueError, match="no default passwords"):
        config.mqtt.read_password()
    (tmp_path / "secrets" / "mqtt").write_text("9f2c-unique\n")
    assert config.mqtt.read_password().get_secret_value() == "9f2c-unique"  # type: ignore[union-attr]


def test_rules_on_a_class_and_on_a_panel(tmp_path: Path) -> None:
    text = BASE + """
[[serial_input]]
name = "panel"
port = "/dev/ttyUSB1"
profile = "notifier"
device_id = "panel-1"

[[rule]]
when = { class = "fire", site_any = true, alarm = "any" }
then = { device = "fire-1", coil = "output", value = true }
release = "manual"

[[rule]]
when = { device = "panel-1", alarm = "fire" }
then = { device = "panel-1", coil = 0, value = true }
"""
    path = write(tmp_path, text)
    assert errors_of(path) == [
        f"{path}:40: rule[2].then.device: device 'panel-1' is a serial input, which cannot be "
        "written; the action needs a Modbus device from a [[bus.device]]"]
    config = load_config(write(tmp_path, text.replace(
        'then = { device = "panel-1"', 'then = { device = "fire-1"')))
    assert config.rule[1].release == "manual"
    assert config.serial_input[0].parser_profile.name == "notifier"


def test_an_unknown_profile_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """
[[serial_input]]
name = "panel"
port = "/dev/ttyUSB1"
profile = "siemens"
device_id = "panel-1"
""")
    [error] = errors_of(path)
    assert error.startswith(f"{path}:30: serial_input[0].profile: unknown profile 'siemens'; "
                            "shipped profiles: generic, notifier")


def test_locator_counts_tables_per_parent_and_reads_inline_values() -> None:
    text = """\
[gateway]
id = "x"   # comment with = and [brackets]
note = '''
[[bus]] inside a string
'''
[[bus]]
name = "a"
[[bus.device]]
id = "a1"
[[bus.device]]
id = "a2"
poll = { status_ms = 100, timeout_s = 0.5 }
[[bus]]
name = "b"
device = [
  { id = "b1" },
  { id = "b2", address = 3 },
]
[mqtt]
tls.enabled = true
"""
    locator = TomlLocator(text)
    assert locator.line_of(("gateway", "id")) == 2
    assert locator.line_of(("bus", 0)) == 6
    assert locator.line_of(("bus", 0, "device", 1, "id")) == 11
    assert locator.line_of(("bus", 0, "device", 1, "poll", "timeout_s")) == 12
    assert locator.line_of(("bus", 1, "name")) == 14
    assert locator.line_of(("bus", 1, "device", 1, "address")) == 17
    assert locator.line_of(("bus", 1, "device", 0, "missing")) == 16  # its element's line
    assert locator.line_of(("mqtt", "tls", "enabled")) == 20
    assert locator.line_of(("bus", 7)) == 1  # nothing recorded: top of the file


def test_models_validate_without_a_file() -> None:
    config = validate_config(BASE)
    assert isinstance(config, GatewayConfig)
    assert config.device("flood-2").address == 2


def test_a_long_serial_by_id_path_is_accepted(tmp_path: Path) -> None:
    by_id = ("/dev/serial/by-id/usb-Silicon_Labs_CP2102N_USB_to_UART_Bridge_Controller_"
             "3c2b9f2a8c4fec11a5b3e0c7ff8b9a0c-if00-port0")
    config = validate_config(BASE.replace('port = "/dev/ttyUSB0"', f'port = "{by_id}"'))
    assert config.bus[0].port == by_id  # type: ignore[union-attr]


# -- [ota] ------------------------------------------------------------------------------------
def test_the_ota_section_resolves_its_paths_and_defaults_its_cache_under_storage(
        tmp_path: Path) -> None:
    from gateway.config import missing_files

    text = BASE.replace('id = "gw-1"', f'id = "gw-1"\nstorage = "{tmp_path / "state"}"')
    config = load_config(write(tmp_path, text + '\n[ota]\ntrust = "keys/trust.json"\n'))
    assert config.ota is not None and config.ota.trust == tmp_path / "keys" / "trust.json"
    assert config.ota_cache_dir == tmp_path / "state" / "ota-cache"
    assert config.ota.offer_jitter_s == 10 and config.ota.cache_max_mb == 64
    assert missing_files(config) == [f"ota.trust: {tmp_path / 'keys' / 'trust.json'} "
                                     "does not exist"]


@pytest.mark.parametrize(("wait", "accepted"), [(0, True), (300, True), (899, True),
                                              (900, False), (3600, False)])
def test_the_gateway_must_confirm_a_trial_before_the_node_gives_up_on_it(
        tmp_path: Path, wait: int, accepted: bool) -> None:
    """A node resets a trial image it has not been confirmed for within its confirm-by time and
    rolls back after a few boots: a gateway set to wait that long undoes every update."""
    text = BASE.replace('id = "gw-1"', f'id = "gw-1"\nconfirm_trial_after_s = {wait}')
    if accepted:
        assert load_config(write(tmp_path, text)).gateway.confirm_trial_after_s == wait
        return
    [issue] = errors_of(write(tmp_path, text))
    assert issue.startswith(f"{tmp_path / 'gateway.toml'}:3: gateway.confirm_trial_after_s: "
                            "must be below 900 s"), issue


def test_the_gateways_confirm_limit_is_the_firmwares_trial_deadline() -> None:
    found = re.search(r"^_TRIAL_CONFIRM_S = (\d+)", (FIRMWARE / "app" / "node.py").read_text(),
                      re.M)
    assert found, "app/node.py no longer sets _TRIAL_CONFIRM_S"
    assert int(found.group(1)) == NODE_TRIAL_CONFIRM_S


@pytest.mark.parametrize(("extra", "field"), [
    ("cache_max_mb = 0", "ota.cache_max_mb"),
    ("offer_jitter_s = -1", "ota.offer_jitter_s"),
    ("trusted = \"x\"", "ota.trusted"),  # a typo is an error, never a silent default
])
def test_bad_ota_keys_are_refused_with_their_line(tmp_path: Path, extra: str, field: str) -> None:
    text = BASE + f'\n[ota]\ntrust = "trust.json"\n{extra}\n'
    issues = errors_of(write(tmp_path, text))
    line = text.count("\n")  # the last line: the bad key
    assert [i.split(": ", 2)[:2] for i in issues] == [[f"{tmp_path / 'gateway.toml'}:{line}",
                                                       field]], issues


def test_without_an_ota_section_the_gateway_refuses_ota_commands() -> None:
    config = validate_config(BASE)
    assert config.ota is None
