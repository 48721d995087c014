"""The poll schedule as a table: priorities, aging, back-off, offline; no bus, no clock."""

from __future__ import annotations

import itertools
import random

import pytest

from gateway.schedule import (
    CHANGE_ATTEMPTS,
    FIRE_BURST,
    FIRE_MAX_BACKOFF_S,
    FULL_PROBE_EVERY,
    HOT_BURST,
    HOT_STATUS_S,
    LEARN_AFTER,
    MIN_FIRST_TRY_S,
    OFFLINE_AFTER,
    REPLY_FACTOR,
    Job,
    ReplyTimer,
    Schedule,
    Timing,
    next_job,
    short_try,
)


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
    # telemetry overdue by a whole period (starving) goes before other status ...
    ({"a": flood(status_due=99, telemetry_due=4.0), "b": flood(status_due=9.5, telemetry_due=99)},
     10.0, Job("a", "telemetry")),
    # ... but not before a fire detector's status, however long it starved (see FIRE_BURST)
    ({"a": flood(status_due=99, telemetry_due=-90.0), "f": fire(status_due=9.9,
                                                                  telemetry_due=99)},
     10.0, Job("f", "status")),
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
    t = flood(status_due=40.0, telemetry_due=100.0)
    t.started("status", 49.0)  # due at 40, its poll began at 49 and goes unanswered
    went = [t.failed(50.0, jitter) for _ in range(failures)]
    assert went[-1] is offline_now
    assert went.count(True) == (1 if failures >= OFFLINE_AFTER else 0)
    if delay is None:
        assert t.status_due == 40.0  # no back-off: it keeps its place in line (once)
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


def test_telemetry_of_the_class_block_alone_leaves_the_status_job_where_it_was() -> None:
    # a node known online: its telemetry reads registers 16.. only, and its status read stays
    # due when it was (on a saturated riser that is the next round, not half a second later)
    t = fire(status_due=10.2, telemetry_due=10.0)
    t.started("telemetry", 10.0, covers_status=False)
    assert (t.telemetry_due, t.status_due) == (15.0, 10.2)
    t.started("telemetry", 20.0)  # the whole map (a node not known yet) covers status
    assert t.status_due == 20.5


def test_a_failed_class_telemetry_read_leaves_the_status_poll_its_kept_place() -> None:
    # noise garbles a detector's telemetry (class block alone), then its next status poll goes
    # unanswered twice: that status poll still keeps its place (it is polled again next, not a
    # whole round later, ~1 s on a noisy riser); a second failed status poll waits its turn
    t = fire(status_due=10.2, telemetry_due=10.0)
    t.started("telemetry", 10.0, covers_status=False)
    t.garbled()
    assert t.status_due == 10.2
    t.started("status", 10.3)
    t.failed(10.4)
    assert t.status_due == 10.2  # its place kept: due at once
    t.started("status", 10.45)
    t.failed(10.5)
    assert t.status_due == pytest.approx(10.95)  # twice: it waits its turn


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


def test_a_starving_job_cuts_in_after_a_burst_of_fire_polls() -> None:
    starving = {"a": flood(status_due=99, telemetry_due=4.0),
                "f": fire(status_due=9.9, telemetry_due=99)}
    assert next_job(starving, 10.0, fire_streak=FIRE_BURST - 1) == Job("f", "status")
    assert next_job(starving, 10.0, fire_streak=FIRE_BURST) == Job("a", "telemetry")
    # a job that is merely due (not starving) still waits for the fire statuses
    due = {"a": flood(status_due=99, telemetry_due=9.0), "f": fire(status_due=9.9,
                                                                   telemetry_due=99)}
    assert next_job(due, 10.0, fire_streak=10 * FIRE_BURST) == Job("f", "status")


def test_the_schedule_counts_fire_polls_in_a_row() -> None:
    timings = {"f": fire(status_due=0.0, telemetry_due=99), "a": flood(status_due=99,
                                                                       telemetry_due=-10)}
    schedule = Schedule(timings)
    jobs = []
    for step in range(2 * FIRE_BURST + 2):
        job = schedule.next(float(step))
        assert isinstance(job, Job)
        jobs.append(job)
        timings[str(job.device)].started(job.kind, float(step))
        timings["f"].status_due = float(step)  # the detector is always due again
        timings["a"].telemetry_due = -10.0  # and the telemetry always starving
    assert jobs[:FIRE_BURST] == [Job("f", "status")] * FIRE_BURST
    assert jobs[FIRE_BURST] == Job("a", "telemetry")
    assert jobs[FIRE_BURST + 1:2 * FIRE_BURST + 1] == [Job("f", "status")] * FIRE_BURST


@pytest.mark.parametrize(("garbled", "attempt", "retry"), [
    (True, 0, True),
    (False, 0, True),                     # silence right after the node answered: garbled
    (True, CHANGE_ATTEMPTS - 2, True),    # request, try again
    (False, CHANGE_ATTEMPTS - 2, True),
    (True, CHANGE_ATTEMPTS - 1, False),   # bounded: the next revisit tries again
])
def test_the_block_read_of_an_alarm_edge_is_retried_at_once_a_few_times(
        garbled: bool, attempt: int, retry: bool) -> None:
    assert fire().retry_now(garbled, attempt, changed=True) is retry


@pytest.mark.parametrize(("attempt", "changed", "short"), [
    (0, False, True),                   # a poll's first try: a few usual replies long
    (1, False, False),                  # its retry: the full timeout (a slow node is no fault)
    (0, True, True),                    # an alarm edge's block read: short ...
    (CHANGE_ATTEMPTS - 2, True, True),
    (CHANGE_ATTEMPTS - 1, True, False),  # ... but for its last try
])
def test_which_tries_wait_only_a_few_usual_replies(attempt: int, changed: bool,
                                                   short: bool) -> None:
    assert short_try(attempt, changed) is short


def test_a_first_try_waits_a_few_replies_long_once_learned() -> None:
    timer = ReplyTimer()
    assert timer.first_try_s(0.5) == 0.5  # nothing learned: the configured timeout
    for seconds in [0.012, 0.030, 0.015, 0.018][:LEARN_AFTER]:
        timer.observe(seconds)
    assert timer.first_try_s(0.5) == pytest.approx(REPLY_FACTOR * 0.030)
    assert timer.first_try_s(0.04) == 0.04  # never longer than the configured one
    fast = ReplyTimer()
    for _ in range(LEARN_AFTER):
        fast.observe(0.001)
    assert fast.first_try_s(0.5) == MIN_FIRST_TRY_S  # a floor for a loaded host
    for _ in range(40):  # the slowest of the recent replies only: an old stall is forgotten
        timer.observe(0.010)
    assert timer.first_try_s(0.5) == MIN_FIRST_TRY_S


def test_a_first_try_of_a_longer_read_waits_for_its_longer_answer_too() -> None:
    timer = ReplyTimer()
    for _ in range(LEARN_AFTER):
        timer.observe(0.020)  # status words (one register) answered in 20 ms
    short = timer.first_try_s(0.5)
    assert timer.first_try_s(0.5, longer_s=0.025) == pytest.approx(short + 0.025)
    assert timer.first_try_s(0.07, longer_s=0.025) == 0.07  # never past the configured one
    never = ReplyTimer()  # a node never heard: the bus' learned timeout, plus the same
    assert never.first_try_s(0.5, bus_learned=0.06, probe=1, longer_s=0.01) == \
        pytest.approx(0.07)


def test_a_node_never_heard_is_probed_short_but_sometimes_in_full() -> None:
    never = ReplyTimer()
    waits = [never.first_try_s(0.5, bus_learned=0.06, probe=n) for n in range(1, 9)]
    assert waits.count(0.5) == 8 // FULL_PROBE_EVERY
    assert set(waits) == {0.06, 0.5}
    assert never.first_try_s(0.5, bus_learned=None, probe=1) == 0.5


# -- the schedule on a modelled riser ----------------------------------------------------------
# Costs of a 19200-baud bus as measured on this project's paced simulator (bench latency,
# gateway trace): a status word read 20 ms, the alarm word 25 ms, a 22-register telemetry read
# 45 ms; with 1 % of bytes flipped, 8 % of requests are lost (silence until the timeout) and a
# reply is garbled with a probability that grows with its length (cut 50 ms after its bytes).
STATUS_S, ALARM_WORD_S, TELEMETRY_S, GARBLE_CUT_S = 0.020, 0.025, 0.045, 0.050
CLASS_TELEMETRY_S = 0.024  # telemetry of the class block alone (6 registers)
CHAR_S = 11 / 19200
TIMEOUT_S = 0.2


def _riser_revisits(seconds: float, detectors: int = 32, noise: float = 0.01,
                    seed: int = 3, settle_s: float = 10.0,
                    lean: bool = False) -> list[float]:
    """Run the schedule over a riser of fire detectors (5 s telemetry, 500 ms status) plus one
    dead detector, with the poller's retry and timeout rules; the gaps between two good status
    reads of each live detector after the first ``settle_s`` (the dead node is found offline,
    reply times are learned), sorted. ``lean``: the poller's reads as they are now: telemetry
    of a node known online reads its class block alone, every read's first try is short, and
    a garbled reply is known at its last byte; without it, as they were before."""
    rng = random.Random(seed)
    timings = {a: Timing(0.5, 5.0, 30.0, fire=True, status_due=a * 0.01,
                         telemetry_due=0.5 + a * 0.05) for a in range(1, detectors + 2)}
    dead = detectors + 1
    replies = {a: ReplyTimer() for a in timings}
    probes = dict.fromkeys(timings, 0)
    schedule = Schedule(timings)
    now = 0.0
    last_ok = dict.fromkeys(range(1, detectors + 1), 0.0)
    gaps: list[float] = []

    def bus_learned() -> float | None:
        known = [t for r in replies.values() if (t := r.learned_s) is not None]
        return max(known) if known else None

    while now < seconds:
        job = schedule.next(now)
        if not isinstance(job, Job):
            now += job if isinstance(job, float) else 1.0
            continue
        a, timing = int(str(job.device)), timings[int(str(job.device))]
        class_read = lean and job.kind == "telemetry" and a != dead
        timing.started(job.kind, now, covers_status=not class_read)
        cost, wire_bytes = (STATUS_S, 15) if job.kind == "status" else \
            (CLASS_TELEMETRY_S, 25) if class_read else (TELEMETRY_S, 57)
        attempt, heard = 0, False
        while True:
            if attempt == 0 and (job.kind == "status" or lean):
                if replies[a].answered == 0 and job.kind == "status":
                    probes[a] += 1
                timeout = replies[a].first_try_s(TIMEOUT_S, bus_learned(), probes[a],
                                                 (wire_bytes - 15) * CHAR_S)
            else:
                timeout = TIMEOUT_S
            lost = a == dead or rng.random() < 1 - (1 - noise) ** 8
            garbled = not lost and rng.random() < 1 - (1 - noise) ** (wire_bytes - 8)
            if lost:
                now += timeout
            elif garbled:
                now += cost + (CHAR_S if lean else GARBLE_CUT_S)
            else:
                now += cost
                break
            heard = heard or garbled
            if timing.retry_now(heard, attempt):
                attempt += 1
                continue
            if heard:
                timing.garbled()
            else:
                timing.failed(now, rng.uniform(0.8, 1.2))
            break
        if a != dead and not lost and not garbled:
            timing.answered()
            if job.kind == "status":
                replies[a].observe(cost)
            if last_ok[a] > settle_s:
                gaps.append(now - last_ok[a])
            last_ok[a] = now
    return sorted(gaps)


def _quantile(gaps: list[float], q: float) -> float:
    return gaps[int(q * (len(gaps) - 1))]


def test_on_a_noisy_riser_with_a_dead_node_fire_detectors_are_revisited_within_about_two_seconds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 32 detectors, 1 % of bytes flipped, a dead node, 5 s telemetry: the bus cannot keep the
    # 500 ms status period (one round of status reads alone is ~1.1 s on this line), so it is
    # saturated and the order decides. Fire first, telemetry cutting in once per FIRE_BURST
    # fire polls: p99 ~2.1 s, longest ~3.5 s (three seeds). With starving telemetry first
    # (the rule before), p99 ~4 s and the longest ~6 s.
    gaps = _riser_revisits(120.0)
    assert _quantile(gaps, 0.99) < 2.5 and gaps[-1] < 4.0, (_quantile(gaps, 0.99), gaps[-1])
    monkeypatch.setattr("gateway.schedule.FIRE_BURST", 0)
    before = _riser_revisits(120.0)
    assert _quantile(before, 0.99) > 3.0, _quantile(before, 0.99)


def test_lean_reads_bring_a_noisy_riser_round_to_about_a_second() -> None:
    # the same riser with the poller's reads as they are now (telemetry of the class block
    # alone, every first try short, a garbled reply known at its last byte): p50 ~0.96 s, p99
    # ~1.5 s, longest ~2.2 s (three seeds), against p50 ~1.4 s, p99 ~2.1 s, longest ~3.4 s
    lean, before = _riser_revisits(120.0, lean=True), _riser_revisits(120.0)
    assert _quantile(lean, 0.5) < 0.8 * _quantile(before, 0.5), (lean[len(lean) // 2],
                                                                 before[len(before) // 2])
    assert _quantile(lean, 0.99) < 1.8 and lean[-1] < 2.6, (_quantile(lean, 0.99), lean[-1])


def test_a_detector_in_pre_alarm_is_read_first_and_often() -> None:
    hot = fire(status_due=9.9, telemetry_due=99, hot=True)
    timings = {"f": fire(status_due=8.0, telemetry_due=99), "h": hot}
    assert next_job(timings, 10.0) == Job("h", "status")  # before a detector waiting longer
    assert next_job(timings, 10.0, hot_streak=HOT_BURST) == Job("f", "status")  # then one
    hot.started("status", 10.0)                                  # ordinary detector
    assert hot.status_due == pytest.approx(10.0 + HOT_STATUS_S)
    cold = fire()
    cold.started("status", 10.0)
    assert cold.status_due == pytest.approx(10.5)


def test_hot_detectors_take_at_most_half_the_fire_polls() -> None:
    # a floor full of smoke: 6 detectors in pre-alarm among 32, every poll 20 ms (the hot ones
    # alone would want 6 x 20 ms every 150 ms: 80 % of the bus)
    timings = {n: fire(status_due=0.0, telemetry_due=1e9, hot=n < 6) for n in range(32)}
    schedule = Schedule(timings)
    order: list[bool] = []
    now = 100.0
    while len(order) < 60:
        job = schedule.next(now)
        assert isinstance(job, Job)  # saturated: always a job
        order.append(int(str(job.device)) < 6)
        timings[int(str(job.device))].started("status", now)
        now += 0.02
    assert not any(a and b for a, b in itertools.pairwise(order)), order  # never two hot in a row
    assert 20 <= order.count(True) <= 30, order.count(True)  # yet close to half of the polls
