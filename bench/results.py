"""The benchmark results contract (ARCHITECTURE.md): bench/results.json and a printed table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

RESULTS_FILE = Path(__file__).resolve().parent / "results.json"


@dataclass
class Metric:
    name: str
    value: float
    unit: str
    goal: float
    better: Literal["higher", "lower"]
    reference: str

    @property
    def met(self) -> bool:
        return self.value >= self.goal if self.better == "higher" else self.value <= self.goal


def write(metrics: list[Metric], path: Path = RESULTS_FILE) -> None:
    """Write ``metrics`` into ``path``: a metric measured now replaces the one of its name, and
    the others already there stay, so `python -m bench ota` does not drop the rest of a run."""
    kept: list[dict[str, object]] = []
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = []
    fresh = {m.name for m in metrics}
    if isinstance(previous, list):
        kept = [m for m in previous if isinstance(m, dict) and m.get("name") not in fresh]
    path.write_text(json.dumps(kept + [asdict(m) for m in metrics], indent=2) + "\n")


def table(metrics: list[Metric]) -> str:
    rows = [("metric", "value", "unit", "goal", "met")]
    for m in metrics:
        value = f"{m.value:,.0f}" if abs(m.value) >= 1000 else f"{m.value:.4g}"
        goal = f"{'≥' if m.better == 'higher' else '≤'} {m.goal:g}"
        rows.append((m.name, value, m.unit, goal, "yes" if m.met else "NO"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
