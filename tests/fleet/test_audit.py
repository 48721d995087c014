"""The audit log is append-only in the database itself, and readable by admins only."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from fleet.audit.service import record


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET actor = 'someone-else'",
    "DELETE FROM audit_log",
])
def test_the_audit_log_refuses_to_be_rewritten(fleet_db, statement: str) -> None:  # type: ignore[no-untyped-def]
    with fleet_db.transaction() as s:
        record(s, "user:alice", "alarm.acknowledged", "alarm", 1, {"comment": "seen"})
    with pytest.raises(DBAPIError, match="append-only"), fleet_db.transaction() as s:
        s.execute(text(statement))
    with fleet_db.transaction() as s:
        assert s.execute(text("SELECT actor FROM audit_log")).scalars().all() == ["user:alice"]


def test_every_registry_change_is_audited_with_who(client, world) -> None:  # type: ignore[no-untyped-def]
    r = client.patch(f"/api/v1/devices/{world.devices['flood-a']}",
                     headers=world.headers("technician"), json={"name": "Cống Nguyễn Huệ"})
    assert r.status_code == 200
    entries = client.get("/api/v1/audit", headers=world.headers("admin"),
                         params={"action": "device.updated"}).json()
    assert len(entries) == 1
    assert entries[0]["actor"] == "user:technician"
    assert entries[0]["detail"]["after"] == {"name": "Cống Nguyễn Huệ"}
    assert client.get("/api/v1/audit", headers=world.headers("technician")).status_code == 403
