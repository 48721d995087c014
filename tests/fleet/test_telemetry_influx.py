"""Telemetry through influxdb-client's write API into a real victoria-metrics, read back point for
point: every value, every timestamp, every tag."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.telemetry import Reading, SinkError
from fleet.telemetry.influx import InfluxSink, line_protocol
from tests.fleet.victoria import Victoria
from tests.gateway.mosquitto import free_port

T0 = 1_764_000_000_000  # ms


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[Victoria]:
    vm = Victoria(tmp_path / "vm")
    vm.start()
    yield vm
    vm.stop()


def _sink(vm: Victoria) -> InfluxSink:
    return InfluxSink(vm.url, token="test-token", org="city", bucket="telemetry")


def _readings(n: int) -> list[Reading]:
    out = []
    for i in range(n):
        device = f"fire-{i % 7:02d}"
        out.append(Reading(device=device, epoch="e1", seq=i // 7 + 1,
                           ts_ms=T0 + (i // 7) * 10_000 + i % 7, device_class="fire",
                           values={"temperature": 20.0 + (i % 97) / 8, "smoke": i * 0.001},
                           gateway="gw-q1", site="Ben Thanh market", area="ward-1"))
    return out


def _exported(vm: Victoria, metric: str) -> dict[tuple[str, int], float]:
    samples: dict[tuple[str, int], float] = {}
    for series in vm.export(metric):
        labels = series["metric"]
        assert labels["site"] == "Ben Thanh market" and labels["area"] == "ward-1"
        assert labels["gateway"] == "gw-q1"
        for ts, value in zip(series["timestamps"], series["values"], strict=True):
            assert (labels["device"], ts) not in samples, "a point came back twice"
            samples[(labels["device"], ts)] = value
    return samples


def test_every_point_written_comes_back_from_victoria_metrics(victoria: Victoria) -> None:
    readings = _readings(7 * 400)
    sink = _sink(victoria)
    for start in range(0, len(readings), 500):  # batches as ingest hands them over
        sink.write(readings[start:start + 500])
    sink.close()
    for field in ("temperature", "smoke"):
        expected = {(r.device, r.ts_ms): r.values[field] for r in readings}
        got = _exported(victoria, f"fire_{field}")
        assert got.keys() == expected.keys()
        assert all(math.isclose(got[k], v, rel_tol=1e-12, abs_tol=1e-12)
                   for k, v in expected.items())


def test_a_batch_written_again_after_a_crash_reads_back_once(tmp_path: Path) -> None:
    """Redelivery after a crash between the sink's write and the accounting's commit writes the
    batch again; InfluxDB overwrites same-series same-time points, and victoria-metrics does so
    when started with -dedup.minScrapeInterval=1ms (as docs/fleet.md says to)."""
    vm = Victoria(tmp_path / "vm", extra_args=["-dedup.minScrapeInterval=1ms"])
    vm.start()
    try:
        readings = _readings(7 * 20)
        sink = _sink(vm)
        sink.write(readings)
        sink.write(readings[:70])
        sink.close()
        got = _exported(vm, "fire_temperature")
        assert len(got) == len(readings)
    finally:
        vm.stop()


def test_tags_with_spaces_commas_and_equals_survive_line_protocol() -> None:
    reading = Reading(device="fire 1", epoch="e", seq=1, ts_ms=5, device_class="fire,x",
                      values={"a b": 1.5, "nan": math.nan}, site="a=b,c", area="")
    assert line_protocol(reading) == r"fire\,x,device=fire\ 1,site=a\=b\,c a\ b=1.5 5"
    assert line_protocol(Reading("d", "e", 1, 5, "fire", {"x": math.inf})) is None


def test_an_unreachable_influxdb_is_a_sink_error_so_the_batch_is_not_acknowledged() -> None:
    sink = InfluxSink(f"http://127.0.0.1:{free_port()}", token="t", org="o", bucket="b",
                      timeout_s=2)
    with pytest.raises(SinkError, match="InfluxDB"):
        sink.write(_readings(3))
    sink.close()
