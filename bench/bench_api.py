"""Fleet API: a filtered, paged device list with 100,000 devices (``api_device_list_p99_s``).

The registry is built as a city would have it: 1 city, 100 wards, 1,000 sites, 100 gateways,
100,000 devices of the four classes, on the embedded SQLite database (migrated with Alembic, as
``serve`` does). Requests go through the whole HTTP stack in process (FastAPI's TestClient):
a ward technician's list (the RBAC join on the area subtree) and an admin's, each with filters
(class, connectivity, area, tag) and random pages. Goal: p99 ≤ 0.05 s.
"""

from __future__ import annotations

import random
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from bench.results import Metric

DEVICES, WARDS, SITES, GATEWAYS = 100_000, 100, 1_000, 100
REQUESTS = 300
GOAL_S = 0.05
CLASSES = ("fire", "flood", "water", "air")


def _populate(db, settings) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from sqlalchemy import insert

    from fleet.auth import service as auth
    from fleet.auth.models import User
    from fleet.registry.models import Area, Device, Gateway, Site

    rng = random.Random(7)
    with db.transaction() as s:
        s.execute(insert(Area), [{"id": 1, "name": "Thành phố Hồ Chí Minh", "kind": "city",
                                  "parent_id": None, "path": "/1/", "code": None}])
        s.execute(insert(Area), [{"id": 2 + w, "name": f"Phường {w + 1}", "kind": "ward",
                                  "parent_id": 1, "path": f"/1/{2 + w}/", "code": None}
                                 for w in range(WARDS)])
        s.execute(insert(Site), [{"id": 1 + i, "name": f"site {i}", "area_id": 2 + i % WARDS,
                                  "latitude": 10.7 + i * 1e-4, "longitude": 106.6,
                                  "address": ""} for i in range(SITES)])
        s.execute(insert(Gateway), [{"id": 1 + g, "key": f"gw-{g:03d}", "name": "",
                                     "site_id": 1 + g * (SITES // GATEWAYS),
                                     "connectivity": "online", "health": {},
                                     "auto_created": False} for g in range(GATEWAYS)])
        rows = []
        for d in range(DEVICES):
            rows.append({"gateway_id": 1 + d % GATEWAYS, "key": f"dev-{d:06d}", "name": "",
                         "device_class": rng.choice(CLASSES), "address": 1 + d % 247,
                         "site_id": 1 + rng.randrange(SITES),
                         "connectivity": rng.choice(("online", "online", "online", "offline",
                                                     "unknown")),
                         "faults": [], "status": [],
                         "tags": ["riser"] if rng.random() < 0.1 else [],
                         "auto_created": False})
            if len(rows) == 10_000:
                s.execute(insert(Device), rows)
                rows = []
        for role, area in (("admin", None), ("technician", 2 + 17)):
            auth.create_user(s, settings, username=role, password=secrets.token_urlsafe(16),
                             role=role, area_id=area)
        s.flush()
        tokens = {u.username: auth.issue_token(s, settings, u, kind="session")
                  for u in s.query(User)}
    return {"tokens": tokens}


def run() -> list[Metric]:
    from fastapi.testclient import TestClient

    from fleet.app import create_app
    from fleet.core.db import Database, optimize
    from fleet.core.migrate import upgrade
    from fleet.core.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'fleet.db'}"
        upgrade(url)
        settings = Settings(data_dir=Path(tmp), database_url=url,
                            secret_key=secrets.token_urlsafe(48), run_timers=False,
                            argon2_time_cost=1, argon2_memory_kib=1024)
        db = Database.from_url(url)
        t0 = time.perf_counter()
        world = _populate(db, settings)
        print(f"  registry of {DEVICES:,} devices built in {time.perf_counter() - t0:.1f} s")
        optimize(db)
        tokens: dict[str, str] = world["tokens"]  # type: ignore[assignment]
        rng = random.Random(11)
        timings: list[float] = []
        by_kind: dict[str, list[float]] = {}
        with TestClient(create_app(settings, database=db)) as client:
            # the same stack's floor, for reference: an endpoint that touches nothing
            floor = []
            for _ in range(100):
                start = time.perf_counter()
                client.get("/api/v1/health")
                floor.append(time.perf_counter() - start)
            for i in range(REQUESTS):
                who = "technician" if i % 2 else "admin"
                # a ward has 1,000 devices; the admin pages deeper into the city's 100,000
                deepest = 100 if who == "technician" or i % 5 == 2 else 2000
                params: dict[str, object] = {"limit": 50,
                                             "offset": rng.randrange(0, deepest, 50)}
                pick = i % 5
                if pick == 0:
                    params["class"] = rng.choice(CLASSES)
                elif pick == 1:
                    params["connectivity"] = rng.choice(("offline", "unknown"))
                elif pick == 2 and who == "admin":
                    params["area_id"] = 2 + rng.randrange(WARDS)
                elif pick == 3:
                    params["tag"] = "riser"
                start = time.perf_counter()
                r = client.get("/api/v1/devices", params=params,
                               headers={"Authorization": f"Bearer {tokens[who]}"})
                timings.append(time.perf_counter() - start)
                by_kind.setdefault(f"{who}:{pick}", []).append(timings[-1])
                assert r.status_code == 200 and r.json()["items"], (params, r.text[:200])
        db.dispose()
    for kind, ts in sorted(by_kind.items()):
        print(f"    {kind}: max {max(ts) * 1000:.1f} ms, median {statistics.median(ts) * 1000:.1f}")
    timings.sort()
    p99 = timings[int(len(timings) * 0.99) - 1]
    floor.sort()
    print(f"  device list: median {statistics.median(timings) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms over {REQUESTS} requests; /health through the same stack: "
          f"median {statistics.median(floor) * 1000:.1f} ms, p99 {floor[98] * 1000:.1f} ms")
    return [Metric("api_device_list_p99_s", p99, "s", GOAL_S, "lower",
                   f"GET /api/v1/devices, filtered and paged, {DEVICES:,} devices, SQLite, "
                   "half as a ward technician (RBAC subtree join)")]
