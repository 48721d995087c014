"""Flapping suppression and storm grouping: pure tables, then the same rules applied by
``apply_alarm`` on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from fleet.alarms import service
from fleet.alarms.grouping import FlapPolicy, StormPolicy, is_flapping, storm_group
from fleet.alarms.models import Alarm
from fleet.auth.rbac import Principal
from fleet.registry import service as reg
from tests.fleet.conftest import alarm_payload

T0 = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
M = timedelta(minutes=1)
FLAP = FlapPolicy(window=10 * M, max_raises=4)
STORM = StormPolicy(window=2 * M)


@pytest.mark.parametrize("earlier, at, expected", [
    ([], T0, False),
    ([T0 - M, T0 - 2 * M], T0, False),                   # third raise: not yet
    ([T0 - M, T0 - 2 * M, T0 - 3 * M], T0, True),         # fourth within 10 min: flapping
    ([T0 - M, T0 - 2 * M, T0 - 11 * M], T0, False),       # one is outside the window
    ([T0 - 10 * M, T0 - 5 * M, T0 - M], T0, True),        # the window's edge counts
    ([T0 + M, T0 + 2 * M, T0 + 3 * M], T0, False),        # later raises do not count
])
def test_flapping(earlier: list[datetime], at: datetime, expected: bool) -> None:
    assert is_flapping(earlier, at, FLAP) is expected


@pytest.mark.parametrize("site_alarms, at, expected", [
    ([], T0, None),                                       # the first alarm starts a group
    ([(7, T0 - M, 7)], T0, 7),                            # a second detector joins it
    ([(7, T0 - 3 * M, 7)], T0, None),                     # too long ago: a new group
    ([(7, T0 - M, 7), (9, T0 - M, 9)], T0, 7),            # two groups in reach: the earliest
    ([(12, T0 - M, 7)], T0, 7),                           # join the member's group, not it
    ([(12, T0 + M, None)], T0, 12),                       # late-arriving earlier alarm
])
def test_storm_grouping(site_alarms: list[tuple[int, datetime, int | None]], at: datetime,
                        expected: int | None) -> None:
    assert storm_group(site_alarms, at, STORM) == expected


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def test_a_fire_on_one_floor_is_one_storm_group_with_every_detector_kept(  # type: ignore[no-untyped-def]
        world, fleet_db) -> None:
    admin = Principal(user_id=0, username="t", role="admin", area_path=None)
    with fleet_db.transaction() as s:
        for n in range(2, 6):
            reg.create_device(s, admin, gateway_id=world.gw_a, key=f"smoke-{n}",
                              device_class="fire", site_id=world.site_a)
    with fleet_db.transaction() as s:
        ids = [service.apply_alarm(s, "gw-a", alarm_payload(
            key, f"{key}:smoke:1:1", ts=_ts(T0 + n * 20 * timedelta(seconds=1)))).id
            for n, key in enumerate(["fire-a", "smoke-2", "smoke-3", "smoke-4", "smoke-5"])]
        # another ward's alarm at the same moment is not in the storm
        other = service.apply_alarm(s, "gw-b", alarm_payload("fire-b", "fb:smoke:1:1",
                                                             ts=_ts(T0))).id
    with fleet_db.transaction() as s:
        groups = {a.id: a.group_id for a in s.scalars(select(Alarm))}
    assert {groups[i] for i in ids} == {ids[0]} and len(ids) == 5
    assert groups[other] == other


def test_a_detector_raising_again_and_again_is_marked_flapping(world, fleet_db) -> None:  # type: ignore[no-untyped-def]
    flags = []
    for n in range(5):
        with fleet_db.transaction() as s:
            a = service.apply_alarm(s, "gw-a", alarm_payload(
                "flood-a", f"flood-a:level:1:{n}", cls="flood", type_="level",
                ts=_ts(T0 + n * 2 * M)))
            flags.append(a.flapping)
        with fleet_db.transaction() as s:
            service.apply_alarm(s, "gw-a", alarm_payload(
                "flood-a", f"flood-a:level:1:{n}", "cleared", cls="flood", type_="level",
                seq=2, ts=_ts(T0 + n * 2 * M + M)))
    assert flags == [False, False, False, True, True]
