"""The poll schedule as a table: priorities, aging, back-off, offline; no bus, no clock."""

from __future__ import annotations

import pytest

from gateway.schedule import FIRE_MAX_BACKOFF_S, OFFLINE_AFTER, Job, Timing, next_job


def fire(**kw: float) -> Timing:
    return Timing(0.5, 5.0, 30.0, fire=True, **kw)  # type: ignore[arg-type]


def flood(**kw: float) -> Timing:
    return Timing(1.0, 5.0, 30.0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("timings", "now", "expected"), [
    # nothing due: how long to wait for the soonest job
    ({"f": fire(status_due=10, telemetry_due=12)}, 9.0, 1.0),
    # fire status before other status, whatever waited longer
    ({"w": flood(status_due=9.0, telemetry_due=99), "f": fire(status_due=9.5, telemetry_due=99)},
     10.0, Job("f", "status")),
    # status before telemetry
    ({"a": flood(status_due=99, telemetry_due=9.0), "b": flood(status_due=9.9, telemetry_due=99)},
     10.0, Job("b", "status")),
    # within a level, the one that waited longest
    ({"a": flood(status_due=9.8, telemetry_due=99), "b": flood(status_due=9.5, telemetry_due=99)},
     10.0, Job("b", "status")),
    # telemetry overdue by a whole period is raised to fire priority: nobody starves
    ({"a": flood(status_due=99, telemetry_due=4.0), "f": fire(status_due=9.9, telemetry_due=99)},
     10.0, Job("a", "telemetry")),
    # no devices: no job and no wait
    ({}, 10.0, None),
])
def test_which_job_runs_next(timings: dict[str, Timing], now: float,
                             expected: Job | float | None) -> None:
    assert next_job(timings, now) == expected


@pytest.mark.parametrize(("failures", "jitter", "offline_now", "delay"), [
    (1, 1.0, False, None),               # one miss: no back-off, not offline
    (OFFLINE_AFTER - 1, 1.0, False, None),
    (OFFLINE_AFTER, 1.0, True, 2.0),     # offline: status_s · 2¹
    (OFFLINE_AFTER + 1, 1.0, False, 4.0),  # reported once, backs off further
    (OFFLINE_AFTER + 2, 0.8, False, 6.4),  # jitter scales the delay
    (OFFLINE_AFTER + 50, 1.2, False, 30.0),  # capped at max_backoff_s, no overflow
])
def test_failures_back_off_and_go_offline_once(failures: int, jitter: float,
                                               offline_now: bool, delay: float | None) -> None:
    t = flood(status_due=100.0, telemetry_due=100.0)
    went = [t.failed(50.0, jitter) for _ in range(failures)]
    assert went[-1] is offline_now
    assert went.count(True) == (1 if failures >= OFFLINE_AFTER else 0)
    if delay is None:
        assert t.status_due == 100.0
    else:
        assert t.status_due == pytest.approx(50.0 + delay)
        assert t.telemetry_due >= t.status_due


def test_a_good_answer_ends_the_failures_and_telemetry_covers_status() -> None:
    t = flood()
    for _ in range(OFFLINE_AFTER):
        t.failed(0.0)
    assert t.offline and t.answered() == OFFLINE_AFTER and not t.offline
    t.started("telemetry", 10.0)
    assert (t.telemetry_due, t.status_due) == (15.0, 11.0)
    t.started("status", 20.0)
    assert t.status_due == 21.0


def test_a_lost_link_puts_every_device_offline_at_once_and_reports_it_once() -> None:
    t = flood()
    assert t.link_down() is True
    assert t.offline
    assert t.link_down() is False


@pytest.mark.parametrize(("failures", "delay"), [
    (OFFLINE_AFTER, 1.0),        # offline: status_s · 2¹, as for any device
    (OFFLINE_AFTER + 1, 2.0),
    (OFFLINE_AFTER + 2, FIRE_MAX_BACKOFF_S),  # 4 s would be longer than a fire detector may wait
    (OFFLINE_AFTER + 50, FIRE_MAX_BACKOFF_S),  # configured max_backoff_s 30 s: still a few s
])
def test_an_offline_fire_detector_is_polled_again_within_seconds(failures: int,
                                                                 delay: float) -> None:
    t = fire(status_due=100.0, telemetry_due=100.0)
    for _ in range(failures):
        t.failed(50.0)
    assert t.status_due == pytest.approx(50.0 + delay)


@pytest.mark.parametrize(("garbled", "attempt", "failures", "retry"), [
    (True, 0, 0, True),                   # a garbled reply: at once, once
    (True, 1, 0, False),                  # ... and only once per poll
    (True, 0, OFFLINE_AFTER, True),       # garbled bytes from an "offline" node: it is alive
    (False, 0, 0, True),                  # silence from an online node: the request may have
    (False, 0, OFFLINE_AFTER - 1, True),  # been garbled on its way, try once more
    (False, 1, 0, False),
    (False, 0, OFFLINE_AFTER, False),     # silence from an offline node: one timeout is enough
])
def test_a_failed_poll_is_retried_at_once_once(garbled: bool, attempt: int, failures: int,
                                               retry: bool) -> None:
    assert fire(failures=failures).retry_now(garbled, attempt) is retry


def test_garbled_replies_never_take_a_detector_offline_nor_back_it_off() -> None:
    t = fire(status_due=100.0, telemetry_due=100.0)
    for _ in range(10 * OFFLINE_AFTER):
        t.started("status", 50.0)
        t.garbled()
    assert not t.offline
    assert t.status_due == pytest.approx(50.5)  # its usual period, no back-off
