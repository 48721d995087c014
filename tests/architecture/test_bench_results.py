"""bench/results.json, the benchmark results contract (ARCHITECTURE.md, "Benchmarks"): one entry
per metric, and a run of some benchmarks keeps what the others measured."""

from __future__ import annotations

import json
from pathlib import Path

from bench.results import Metric, write


def _metric(name: str, value: float) -> Metric:
    return Metric(name, value, "s", 1.0, "lower", "a test")


def test_a_partial_bench_run_replaces_its_own_metrics_and_keeps_the_others(
        tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write([_metric("fire_alarm_to_screen_p99_s", 1.59), _metric("ed25519_verify_ms", 9.0)], path)
    write([_metric("ed25519_verify_ms", 8.2), _metric("ota_wire_ratio_115200", 1.29)], path)
    got = {m["name"]: m["value"] for m in json.loads(path.read_text())}
    assert got == {"fire_alarm_to_screen_p99_s": 1.59, "ed25519_verify_ms": 8.2,
                   "ota_wire_ratio_115200": 1.29}
    assert set(json.loads(path.read_text())[0]) == {"name", "value", "unit", "goal", "better",
                                                     "reference"}


def test_an_unreadable_results_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("{not json")
    write([_metric("ed25519_verify_ms", 8.2)], path)
    assert [m["name"] for m in json.loads(path.read_text())] == ["ed25519_verify_ms"]
