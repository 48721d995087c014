"""The gateway confirms a trial image only after the node has run it healthily for a while."""

from __future__ import annotations

import pytest

from gateway.trial import TrialWatch

# (seconds, online, trial, boot_count, uptime) per poll; expected confirm decisions
HEALTHY = [(t, True, True, 7, t) for t in range(0, 130, 10)]


def run(watch: TrialWatch, polls: list[tuple[int, bool, bool, int, int]]) -> list[int]:
    return [t for t, online, trial, boot, up in polls
            if watch.observe(float(t), online=online, trial=trial, boot_count=boot, uptime_s=up)]


def test_a_trial_polled_healthy_for_the_configured_time_is_confirmed_once() -> None:
    assert run(TrialWatch(after_s=60), HEALTHY) == [60]


@pytest.mark.parametrize(("name", "polls", "confirmed_at"), [
    ("a reboot restarts the clock",
     [(0, True, True, 7, 0), (50, True, True, 7, 50), (55, True, True, 8, 1),
      (100, True, True, 8, 46), (115, True, True, 8, 61)], [115]),
    ("a silence restarts the clock",
     [(0, True, True, 7, 0), (40, False, True, 7, 40), (50, True, True, 7, 50),
      (100, True, True, 7, 100), (110, True, True, 7, 110)], [110]),
    ("uptime going backwards is a reboot even with the same boot count",
     [(0, True, True, 7, 0), (59, True, True, 7, 59), (60, True, True, 7, 2),
      (119, True, True, 7, 61), (120, True, True, 7, 62)], [120]),
    ("a confirmed image is never confirmed again",
     [(0, True, True, 7, 0), (60, True, True, 7, 60), (70, True, False, 7, 70),
      (200, True, False, 7, 200)], [60]),
    ("no trial, nothing to confirm", [(t, True, False, 7, t) for t in range(0, 300, 30)], []),
])
def test_trial_rules(name: str, polls: list[tuple[int, bool, bool, int, int]],
                     confirmed_at: list[int]) -> None:
    assert run(TrialWatch(after_s=60), polls) == confirmed_at, name


def test_a_failed_confirm_is_tried_again_at_the_next_poll() -> None:
    watch = TrialWatch(after_s=60)
    assert run(watch, HEALTHY[:7]) == [60]
    watch.failed()
    assert watch.observe(70.0, online=True, trial=True, boot_count=7, uptime_s=70)
    assert not watch.observe(80.0, online=True, trial=True, boot_count=7, uptime_s=80)


def test_after_zero_never_confirms() -> None:
    assert run(TrialWatch(after_s=0), HEALTHY) == []
