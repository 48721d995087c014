"""The device's OTA modules carry the window's numbers as const() (no heap on the device);
they must be the numbers of hardware/registers/common.toml [ota] (rendered into app/otadef.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hardware.regmap import load_maps

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"


def _expected() -> dict[str, int]:
    ota = load_maps().ota
    base = ota.base
    values = {"OFFER": ota.holding_register("ota_offer").address - base,
              "OFFER_WORDS": ota.holding_register("ota_offer").words,
              "CONTROL": ota.holding_register("ota_control").address - base,
              "CHUNK": ota.holding_register("ota_chunk").address - base,
              "MAX_CHUNK": ota.max_chunk_bytes}
    values.update({name.upper(): v for name, v in ota.states.items()})
    values.update({name.upper(): v for name, v in ota.controls.items()})
    return values


@pytest.mark.parametrize("module", ["app/ota_rx.py", "app/ota_offer.py"])
def test_the_receivers_constants_are_the_register_maps(module: str) -> None:
    found = dict(re.findall(r"^_([A-Z_]+) = const\((\d+)\)", (FIRMWARE / module).read_text(),
                            re.M))
    assert found, module
    expected = _expected()
    assert {k: int(v) for k, v in found.items()} == {k: expected[k] for k in found}


def test_the_pickers_ota_states_are_the_register_maps() -> None:
    text = (FIRMWARE / "picker.py").read_text()
    match = re.search(r"^OTA_VERIFY_PENDING, OTA_REFUSED = (\d+), (\d+)", text, re.M)
    assert match is not None
    states = load_maps().ota.states
    assert (int(match[1]), int(match[2])) == (states["verify_pending"], states["refused"])
