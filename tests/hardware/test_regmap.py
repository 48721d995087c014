"""The register maps: the contract a technician reads beside a Modbus tool."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardware import regmap


def test_identity_block_matches_the_architecture_contract() -> None:
    maps = regmap.load_maps()
    for cmap in maps.classes.values():
        names = [(r.address, r.name) for r in cmap.input[:6]]
        assert names == [(0, "map_version"), (1, "device_class"), (2, "fw_major"),
                         (3, "fw_minor"), (4, "fw_patch"), (5, "status")]
    assert {c.name: c.class_id for c in maps.classes.values()} == {
        "fire": 1, "flood": 2, "water": 3, "air": 4}
    bits = {b.name: b.bit for b in maps.status_bits}
    assert (bits["alarm"], bits["fault"], bits["ota"], bits["trial"]) == (0, 1, 2, 3)


def test_scaled_values_round_trip_through_register_words() -> None:
    fire = regmap.load_maps().classes["fire"]
    temp = fire.input_register("temperature")
    assert temp.encode(-12.3) == [0xFF85]
    assert temp.decode([0xFF85]) == pytest.approx(-12.3)
    uptime = fire.input_register("uptime")
    assert uptime.encode(70000) == [1, 4464]
    assert uptime.decode([1, 4464]) == 70000
    with pytest.raises(ValueError, match="does not fit"):
        fire.input_register("smoke_raw").encode(70000)


def _write_maps(tmp_path: Path, fire_extra: str) -> Path:
    src = regmap.REGISTERS_DIR
    for f in src.glob("*.toml"):
        (tmp_path / f.name).write_text(f.read_text())
    fire = tmp_path / "fire.toml"
    fire.write_text(fire.read_text() + fire_extra)
    return tmp_path


def test_overlapping_registers_are_refused_with_file_and_name(tmp_path: Path) -> None:
    text = (regmap.REGISTERS_DIR / "fire.toml").read_text().replace(
        '{ address = 21, name = "heat_raw"', '{ address = 20, name = "heat_raw"')
    d = _write_maps(tmp_path, "")
    (d / "fire.toml").write_text(text)
    with pytest.raises(regmap.RegisterMapError, match=r"fire.toml input.*heat_raw.*overlaps"):
        regmap.load_maps(d)


@pytest.mark.parametrize("address, reg_type", [(256, "u16"), (300, "i16"), (255, "u32")])
def test_a_register_beyond_the_8_bit_address_is_refused_with_file_and_name(
        tmp_path: Path, address: int, reg_type: str) -> None:
    # The firmware packs a register as address | type << 8: address 256 would read back as
    # register 0 typed i16, a silent mix-up on the wire; the map must be refused instead.
    text = (regmap.REGISTERS_DIR / "fire.toml").read_text().replace(
        '{ address = 21, name = "heat_raw",        type = "u16"',
        f'{{ address = {address}, name = "heat_raw",        type = "{reg_type}"')
    d = _write_maps(tmp_path, "")
    (d / "fire.toml").write_text(text)
    with pytest.raises(regmap.RegisterMapError,
                       match=rf"fire.toml input.*heat_raw.*address {address} outside 0-255"):
        regmap.load_maps(d)


def test_packing_never_lets_an_address_spill_into_the_type_bits() -> None:
    last = regmap.Register(255, "last", "u16", "")
    assert regmap.pack_register(last) & 0xFF == 255
    with pytest.raises(regmap.RegisterMapError, match="address 256"):
        regmap.pack_register(regmap.Register(256, "beyond", "u16", ""))
    # every register of every class packs and unpacks to its own address and type
    for cmap in regmap.load_maps().classes.values():
        for reg in (*cmap.input, *cmap.holding):
            packed = regmap.pack_register(reg)
            type_code = {"u16": 0, "i16": 1, "u32": 2}[reg.type]  # firmware/app/regbank.py
            assert (packed & 0xFF, packed >> 8 & 3) == (reg.address, type_code)


def test_missing_field_is_named(tmp_path: Path) -> None:
    text = (regmap.REGISTERS_DIR / "flood.toml").read_text().replace(
        ', desc = "0 normal, 1 alert I, 2 alert II, 3 alert III"', "")
    d = _write_maps(tmp_path, "")
    (d / "flood.toml").write_text(text)
    with pytest.raises(regmap.RegisterMapError,
                       match=r"flood.toml input\[\d+\] \(flood_stage\).*'desc'"):
        regmap.load_maps(d)


def test_default_outside_its_range_is_refused(tmp_path: Path) -> None:
    text = (regmap.REGISTERS_DIR / "air.toml").read_text().replace(
        "default = 1500, min = 400", "default = 100, min = 400")
    d = _write_maps(tmp_path, "")
    (d / "air.toml").write_text(text)
    with pytest.raises(regmap.RegisterMapError, match=r"co2_alarm.*default 100"):
        regmap.load_maps(d)


def test_generated_firmware_constants_and_docs_are_fresh() -> None:
    for path, text in regmap.generated_files().items():
        assert path.exists(), f"{path} missing: run `edgefleet hw gen`"
        assert path.read_text() == text, f"{path} is stale: run `edgefleet hw gen`"


def test_docs_show_every_register_of_every_class() -> None:
    docs = regmap.render_docs()
    for cmap in regmap.load_maps().classes.values():
        for reg in cmap.input + cmap.holding:
            assert f"`{reg.name}`" in docs
    assert "| 16 | 30017 | `smoke` | i16 | %/m | 0.01 |" in docs
