"""Ingest's per-batch statements as driver SQL: the accounting rows and ``last_seen``.

Every batch reads and writes one accounting row per (gateway, device, epoch) it carries; with
10,000 devices interleaved that is one row per message. Built with SQLAlchemy Core these
statements cost about 70 µs per message (bench/bench_ingest.py, cProfile): compiling and binding
executemany parameters, and a tuple ``IN`` that SQLAlchemy renders as ``(a, b, c) IN (VALUES
...)``, which SQLite plans as a scan of the whole table per batch (slower with every stream the
fleet has ever seen). Here the same statements are written once per dialect and handed to the
driver: the keys are a ``VALUES`` list *joined* to the table (an index lookup per key on SQLite
and PostgreSQL), and timestamps are encoded by the columns' own SQLAlchemy bind processors, so
the stored values are byte-for-byte what the ORM writes. Values are always bound, never
formatted into the SQL. Tested on both databases by ``tests/fleet/test_ingest_service.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Dialect, Table

from fleet.ingest.models import IngestStream

__all__ = ["BatchSQL", "DirectoryRow", "SavedStream", "StreamRow"]

#: (gateway, device, epoch, seen, dropped, duplicates), in key order.
StreamRow = tuple[str, str, str, str, str, int]
#: (produced, received, duplicates, declared_drops, gaps, seen, dropped, gateway, device,
#: epoch): the totals and ranges of one stream, then its key.
SavedStream = tuple[int, int, int, int, int, str, str, str, str, str]

#: (gateway, device, site id or None, area path or None) of a device the registry holds.
DirectoryRow = tuple[str, str, int | None, str | None]

#: Keys per statement: 3 parameters each, well under SQLite's 32,766 and PostgreSQL's 65,535.
_CHUNK = 2000


class BatchSQL:
    """The statements for one database dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.postgresql = dialect.name == "postgresql"
        table = IngestStream.__table__
        assert isinstance(table, Table)
        # The processor of the dialect's own implementation binds what the ORM binds (on
        # SQLite: SQLAlchemy's "YYYY-MM-DD HH:MM:SS.ffffff" text, the same in every row); the
        # decorator's own processor would leave a datetime for pysqlite's adapter, whose
        # isoformat adds "+00:00" and drops a zero fraction, so the columns that ingest's raw
        # statements write held two text formats, compared as strings by `last_seen < ?`.
        bind = table.c.updated_at.type.dialect_impl(dialect).bind_processor(dialect)
        encode: Callable[[Any], Any] = bind if bind is not None else (lambda v: v)
        self._encode = encode
        mark = "%s" if self.postgresql else "?"
        self._mark = mark
        self._insert = (
            "INSERT INTO ingest_streams (gateway, device, epoch, produced, received, duplicates,"
            " declared_drops, gaps, seen, dropped, first_at, updated_at) VALUES"
            f" ({mark}, {mark}, {mark}, 0, 0, 0, 0, 0, '[]', '[]', {mark}, {mark})"
            " ON CONFLICT DO NOTHING")
        self._save = (
            f"UPDATE ingest_streams SET produced = {mark}, received = {mark},"
            f" duplicates = {mark}, declared_drops = {mark}, gaps = {mark}, seen = {mark},"
            f" dropped = {mark}, updated_at = {mark}"
            f" WHERE gateway = {mark} AND device = {mark} AND epoch = {mark}")
        self._touch_device = (
            f"UPDATE devices SET last_seen = {mark} WHERE key = {mark}"
            f" AND gateway_id = (SELECT id FROM gateways WHERE key = {mark})"
            f" AND (last_seen IS NULL OR last_seen < {mark})")
        self._touch_gateway = (
            f"UPDATE gateways SET last_seen = {mark} WHERE key = {mark}"
            f" AND (last_seen IS NULL OR last_seen < {mark})")

    def when(self, ts: datetime) -> Any:
        """``ts`` as a UTC timestamp column stores it (what the ORM would bind)."""
        return self._encode(ts)

    def insert_missing(self, conn: Connection, keys: Sequence[tuple[str, str, str]],
                       now: datetime) -> None:
        """Create the blank accounting rows of ``keys`` that do not exist yet (in key order)."""
        if keys:
            at = self.when(now)
            conn.exec_driver_sql(self._insert, [(g, d, e, at, at) for g, d, e in keys])

    def load(self, conn: Connection, keys: Sequence[tuple[str, str, str]]) -> list[StreamRow]:
        """The accounting rows of ``keys`` (sorted), locked on PostgreSQL in key order so two
        replicas never deadlock (SQLite's BEGIN IMMEDIATE already serialises writers)."""
        sql = ("SELECT s.gateway, s.device, s.epoch, s.seen, s.dropped, s.duplicates"
               " FROM (VALUES {values}) AS k JOIN ingest_streams s"
               " ON s.gateway = k.column1 AND s.device = k.column2 AND s.epoch = k.column3"
               " ORDER BY s.gateway, s.device, s.epoch")
        if self.postgresql:
            sql += " FOR UPDATE OF s"
        return self._joined(conn, sql, keys)

    def directory(self, conn: Connection, keys: Sequence[tuple[str, str]]
                  ) -> list[DirectoryRow]:
        """What ingest needs of the devices ``keys`` (gateway, device) that the registry holds:
        their site and area path. The keys are joined to the tables (an index lookup each)."""
        return self._joined(conn, "SELECT g.key, d.key, d.site_id, a.path"
                                  " FROM (VALUES {values}) AS k"
                                  " JOIN gateways g ON g.key = k.column1"
                                  " JOIN devices d ON d.gateway_id = g.id AND d.key = k.column2"
                                  " LEFT JOIN sites s ON s.id = d.site_id"
                                  " LEFT JOIN areas a ON a.id = s.area_id", keys)

    def _joined(self, conn: Connection, sql: str, keys: Sequence[tuple[str, ...]]
                ) -> list[Any]:
        """Run ``sql`` with its ``{values}`` list made of ``keys`` (tuples of one width),
        _CHUNK keys at a time: each key joins the tables by an index lookup, where SQLAlchemy's
        tuple IN scanned them."""
        out: list[Any] = []
        if not keys:
            return out
        row = "(" + ", ".join([self._mark] * len(keys[0])) + ")"
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            params = tuple(v for key in chunk for v in key)
            out.extend(conn.exec_driver_sql(sql.format(values=", ".join([row] * len(chunk))),
                                            params).fetchall())
        return out

    def save(self, conn: Connection, rows: Sequence[SavedStream], now: datetime) -> None:
        if rows:
            at = self.when(now)
            conn.exec_driver_sql(self._save, [(*r[:7], at, *r[7:]) for r in rows])

    def touch(self, conn: Connection, devices: Sequence[tuple[str, str, datetime]],
              gateways: Sequence[tuple[str, datetime]]) -> None:
        """last_seen of known devices and their gateways, never moved backwards."""
        if devices:
            enc = self.when
            conn.exec_driver_sql(self._touch_device,
                                 [(enc(ts), dev, gw, enc(ts)) for gw, dev, ts in devices])
        if gateways:
            conn.exec_driver_sql(self._touch_gateway,
                                 [(self.when(ts), gw, self.when(ts)) for gw, ts in gateways])
