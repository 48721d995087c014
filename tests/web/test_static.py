"""The dashboard's files, read as files: one catalogue with every key in both languages and
every key the code asks for, and nothing that would reach outside a closed network."""

from __future__ import annotations

import json
import re
from pathlib import Path

from contracts.release import REASON_SLUGS
from fleet.web import STATIC_DIR
from hardware.regmap import load_maps

ROOT = Path(__file__).resolve().parents[2]

OWN_FILES = [p for p in STATIC_DIR.rglob("*")
             if p.is_file() and "vendor" not in p.relative_to(STATIC_DIR).parts]
CATALOGUE = json.loads((STATIC_DIR / "i18n.json").read_text(encoding="utf-8"))


def test_english_and_vietnamese_have_the_same_keys_and_no_empty_string() -> None:
    assert set(CATALOGUE) == {"en", "vi"}
    missing_vi = sorted(set(CATALOGUE["en"]) - set(CATALOGUE["vi"]))
    missing_en = sorted(set(CATALOGUE["vi"]) - set(CATALOGUE["en"]))
    assert not missing_vi, f"keys missing in Vietnamese: {missing_vi}"
    assert not missing_en, f"keys missing in English: {missing_en}"
    for lang, strings in CATALOGUE.items():
        assert all(v.strip() for v in strings.values()), f"empty string in {lang}"
        # A placeholder in one language must be in the other, or a value goes unshown.
    for key, text in CATALOGUE["en"].items():
        assert set(re.findall(r"\{\w+\}", text)) == set(
            re.findall(r"\{\w+\}", CATALOGUE["vi"][key])), key


def test_every_string_the_page_asks_for_by_name_is_in_the_catalogue() -> None:
    used: set[str] = set()
    for path in STATIC_DIR.glob("js/*.js"):
        used |= set(re.findall(r"""\bt\(\s*["']([\w.\-]+)["']""", path.read_text()))
    assert used, "no t(\"...\") calls found: the pattern no longer matches the code"
    assert sorted(used - set(CATALOGUE["en"])) == []


def test_no_page_or_script_of_ours_references_an_external_url() -> None:
    external = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", re.IGNORECASE)
    offenders = {str(p.relative_to(STATIC_DIR)): external.findall(p.read_text(encoding="utf-8"))
                 for p in OWN_FILES if p.suffix in {".html", ".js", ".css", ".json"}}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_vendored_libraries_the_page_loads_are_present() -> None:
    index = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    for ref in re.findall(r"""(?:src|href)="([^"#]+)\"""", index):
        assert (STATIC_DIR / ref).is_file(), f"index.html loads {ref}, which is not there"


def test_every_fault_a_device_can_report_has_words_in_both_languages() -> None:
    faults = {bit.name for cmap in load_maps().classes.values() for bit in cmap.fault_bits}
    assert faults, "no fault bits found in the register maps"
    for lang, strings in CATALOGUE.items():
        assert sorted(f for f in faults if f"fault.{f}" not in strings) == [], lang


def test_every_status_bit_a_device_can_report_has_words_in_both_languages() -> None:
    # Status bits are common to every class today (hardware/registers/common.toml); a class
    # that ever declares its own is read the same way.
    maps = load_maps()
    bits = {bit.name for bit in maps.status_bits} | {
        bit.name for cmap in maps.classes.values() for bit in getattr(cmap, "status_bits", ())}
    assert {"alarm", "fault", "ota", "trial"} <= bits, "status bits not found in the maps"
    for lang, strings in CATALOGUE.items():
        assert sorted(b for b in bits if f"status.{b}" not in strings) == [], lang


def test_every_ota_failure_reason_in_the_contract_has_words_in_both_languages() -> None:
    # The `failed` row of docs/mqtt.md's phase table names every reason a gateway sends; the
    # device's own refusals (`refusal`) are the release reason slugs; a start the gateway
    # refuses says `busy:` (another delivery runs).
    row = next(line for line in (ROOT / "docs" / "mqtt.md").read_text().splitlines()
               if line.startswith("| `failed` |"))
    reasons = set(re.findall(r"`([a-z_]+)`", row)) - {"failed", "reason", "code", "refusal",
                                                      "detail"}
    assert {"device_refused", "unsupported", "rolled_back", "wrong_class_or_board"} <= reasons
    reasons |= {slug for slug in REASON_SLUGS.values() if slug != "ok"} | {"busy"}
    for lang, strings in CATALOGUE.items():
        assert sorted(r for r in reasons if f"ota.reason.{r}" not in strings) == [], lang
