"""Schemathesis over the fleet's own OpenAPI: generated requests (as an admin, with a populated
registry) never get a 5xx, and every answer matches the documented status codes, content types
and schemas."""

from __future__ import annotations

from collections import Counter

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from sqlalchemy import select

from fleet.auth.models import User
from fleet.auth.service import issue_token

#: Schema-valid but semantically checked: a CSV body is a string to the schema, and its rows are
#: validated (row-numbered 422) by the import itself.
SEMANTIC_422 = {("POST", "/api/v1/devices/import"),
                # a threshold's name and range are the device class's (the register map)
                ("POST", "/api/v1/devices/{device_id}/commands"),
                # a bundle is bytes to the schema; its signature and hashes are checked after
                ("POST", "/api/v1/releases"),
                # waves must increase and end at 100 %, which JSON Schema cannot say
                ("POST", "/api/v1/campaigns"),
                # an area's outline: every ring closed and a size bound (fleet.registry.outline)
                ("PUT", "/api/v1/areas/{area_id}/outline")}
#: The same, only for the bodies that carry the semantic part (a new area with an outline): the
#: rest of the operation's bodies keep the check.
SEMANTIC_422_WITH = {("POST", "/api/v1/areas"): "outline"}
SKIP = {
    # an endless event stream: covered by test_notify with a real server
    ("GET", "/api/v1/notify/alarms"),
}


def _fresh_admin_headers(db, settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    # A new token per operation: the fuzzer may revoke the one it holds (DELETE /auth/tokens/N)
    # and then everything after would only test the 401 path.
    with db.transaction() as s:
        admin = s.scalars(select(User).where(User.username == "admin")).one()
        return {"Authorization": f"Bearer {issue_token(s, settings, admin, kind='session')}"}


def _fuzzer(operation, headers: dict[str, str], statuses: Counter[int]):  # type: ignore[no-untyped-def]
    @given(operation.as_strategy())
    @settings(max_examples=15, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case) -> None:  # type: ignore[no-untyped-def]
        key = (case.method.upper(), case.path)
        semantic = key in SEMANTIC_422 or (
            key in SEMANTIC_422_WITH and isinstance(case.body, dict)
            and case.body.get(SEMANTIC_422_WITH[key]) is not None)
        excluded = [positive_data_acceptance] if semantic else []
        response = case.call_and_validate(headers=headers, excluded_checks=excluded)
        statuses[response.status_code] += 1

    return fuzz


def test_generated_requests_get_no_5xx_and_documented_answers(  # type: ignore[no-untyped-def]
        fleet_app, world, fleet_db, fleet_settings) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fleet_app)
    failures: dict[str, str] = {}
    statuses: Counter[int] = Counter()
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        fuzz = _fuzzer(operation, _fresh_admin_headers(fleet_db, fleet_settings), statuses)
        try:
            fuzz()
        except Exception as exc:
            failures[f"{operation.method.upper()} {operation.path}"] = str(exc)[:2000]
        ran += 1
    assert ran >= 20
    # the fuzzer got past authentication: most answers are successes, not 401s
    assert statuses[401] < sum(n for code, n in statuses.items() if code < 300), statuses
    assert failures == {}, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
