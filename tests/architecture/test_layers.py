"""The package graph of ARCHITECTURE.md ("Layers"): imports point down only.

1. contracts: ``contracts`` (MQTT topics and payloads) and ``hardware`` (register maps, serial line)
2. parts: ``gateway``, ``fleet``, ``provisioning`` and the simulator ``hardware.sim``; none of
   them imports another (a Pi gateway never carries the simulator or the fleet)
3. ``edgefleet``: the CLI and the demo; nothing imports it

Read from the source with ``ast`` (every import, also those inside functions), so the check needs
no import of the code and catches a lazy import that only runs on one path.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LEVEL = {"contracts": 1, "hardware": 1,
         "gateway": 2, "fleet": 2, "provisioning": 2, "hardware.sim": 2,
         "edgefleet": 3}


def unit_of(module: str) -> str | None:
    """The layering unit a dotted module name belongs to (None: stdlib or third party)."""
    if module == "hardware.sim" or module.startswith("hardware.sim."):
        return "hardware.sim"
    top = module.split(".")[0]
    return top if top in LEVEL else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, module_of_file: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in one file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_of_file.split(".")
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_pkg else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from hardware import sim` imports hardware.sim itself
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def edges() -> list[tuple[str, str, str]]:
    """(importing unit, imported unit, where) across units, for every source file."""
    out = []
    for top in ("contracts", "hardware", "gateway", "fleet", "provisioning", "edgefleet"):
        for path in sorted((ROOT / top).rglob("*.py")):
            src = unit_of(module_name(path))
            assert src is not None
            for line, module in imports(path, module_name(path)):
                dst = unit_of(module)
                if dst is not None and dst != src:
                    out.append((src, dst, f"{path.relative_to(ROOT)}:{line} imports {module}"))
    return out


def test_every_import_points_down_a_layer() -> None:
    wrong = [where for src, dst, where in edges() if LEVEL[dst] >= LEVEL[src]]
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_the_check_sees_a_cycle_when_there_is_one(tmp_path: Path) -> None:
    """The checker itself: a lazy import of the CLI from the gateway is an upward edge."""
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from edgefleet.cli import main\n    from . import poller\n")
    found = imports(fake, "gateway.x")
    assert (2, "edgefleet.cli") in found
    assert (3, "gateway.poller") in found
    assert LEVEL[unit_of("edgefleet.cli") or ""] > LEVEL["gateway"]


@pytest.mark.parametrize(("module", "unit"), [
    ("hardware.regmap", "hardware"), ("hardware.sim.bushub", "hardware.sim"),
    ("hardware.sim", "hardware.sim"), ("contracts.mqtt", "contracts"), ("pymodbus", None),
    ("hardware_extra", None),
])
def test_units(module: str, unit: str | None) -> None:
    assert unit_of(module) == unit
