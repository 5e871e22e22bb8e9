"""Set-based writes of many rows straight through the database driver.

Why: SQLAlchemy's ``insert()`` with executemany spends several µs per row building
parameters, and psycopg's plain executemany waits for the server after every statement.
A write stores ~15 rows per resource (current row, history row, index rows), so at
thousands of resources per second the repository hands its rows to this module, which
talks to the DBAPI connection of the caller's SQLAlchemy ``Connection`` — inside the
caller's transaction — with SQL text built once per table:

- SQLite: ``executemany`` of ``INSERT … VALUES (?, …)``; a new resource is one
  ``execute`` (its ``lastrowid`` is the key).
- PostgreSQL, small batches (a REST write): executemany inside one psycopg pipeline —
  new keys come back with ``RETURNING`` in one round trip, everything else follows in a
  second one.
- PostgreSQL, large batches (a transaction Bundle): the keys are drawn from the sequence
  in one query and each table is streamed with ``COPY … FROM STDIN (FORMAT BINARY)``.
  (Queuing every slice of a Bundle as ``INSERT … SELECT unnest(%b arrays)`` in one open
  pipeline, so that the server inserts one slice while the next is indexed, was measured
  too: ~40 % more CPU on both sides than COPY, and slower overall on two cores.)

Driver errors are re-raised as SQLAlchemy's ``DBAPIError`` subclasses (a dropped
connection is invalidated first), so the transaction runner's retries and the 503
handler see exactly what they would see from ``Connection.execute``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from service.db.engine import sqlite_connection_broken
from service.db.schema import INDEX_TABLES, resource, resource_version

#: At or above this many versions in one batch PostgreSQL uses COPY instead of a pipeline.
COPY_THRESHOLD = 32
#: Keys per ``DELETE … WHERE res_key IN (…)`` on SQLite (its host-parameter limit is 32,766).
_SQLITE_IN_CHUNK = 500

_PG_TYPES = {"BIGINT": "int8", "INTEGER": "int4", "BOOLEAN": "bool", "BYTEA": "bytea", "TEXT": "text"}


def _pg_type(compiled: str) -> str:
    """The PostgreSQL type name a binary COPY needs for a column (varchar takes text)."""
    if compiled.startswith("VARCHAR"):
        return "text"
    if compiled.startswith("FLOAT") or compiled == "DOUBLE PRECISION":
        return "float8"
    return _PG_TYPES[compiled]


@dataclass(frozen=True, slots=True)
class TableSpec:
    """The SQL texts and column facts for bulk writes into one table."""

    name: str
    #: the columns written, in row-tuple order (``resource_version.seq`` is left to the database)
    columns: tuple[str, ...]
    pg_types: tuple[str, ...]
    #: positions of float columns (values are coerced with ``float()`` for binary COPY)
    float_positions: tuple[int, ...]
    sqlite_insert: str
    pg_insert: str
    pg_copy: str


def _spec(table: Table, skip: tuple[str, ...] = ()) -> TableSpec:
    dialect = postgresql.dialect()
    cols = [c for c in table.columns if c.name not in skip]
    names = tuple(c.name for c in cols)
    types = tuple(_pg_type(c.type.compile(dialect=dialect)) for c in cols)
    col_list = ", ".join(names)
    return TableSpec(
        name=table.name,
        columns=names,
        pg_types=types,
        float_positions=tuple(i for i, t in enumerate(types) if t == "float8"),
        sqlite_insert=f"INSERT INTO {table.name} ({col_list}) VALUES ({', '.join('?' * len(names))})",
        pg_insert=f"INSERT INTO {table.name} ({col_list}) VALUES ({', '.join(['%s'] * len(names))})",
        pg_copy=f"COPY {table.name} ({col_list}) FROM STDIN (FORMAT BINARY)",
    )


RESOURCE = _spec(resource)
RESOURCE_NEW = _spec(resource, skip=("res_key",))
VERSION = _spec(resource_version, skip=("seq",))
INDEX = {t.name: _spec(t) for t in INDEX_TABLES}

_SQLITE_UPDATE = (
    "UPDATE resource SET version_id = ?, last_updated_us = ?, deleted = ?, content = ? "
    "WHERE res_key = ? AND version_id = ?"
)
_PG_UPDATE = (
    "UPDATE resource SET version_id = %s, last_updated_us = %s, deleted = %s, content = %s "
    "WHERE res_key = %s AND version_id = %s RETURNING res_key"
)
_PG_INSERT_RETURNING = RESOURCE_NEW.pg_insert + " RETURNING res_key"
_PG_NEXT_KEYS = (
    "SELECT nextval(s.seq) FROM (SELECT pg_get_serial_sequence('resource', 'res_key')::regclass AS seq) s, "
    "generate_series(1, %s)"
)

#: (resource_type, id, version_id, last_updated_us, deleted, content) of a new resource
NewRow = tuple[str, str, int, int, bool, bytes | None]
#: (version_id, last_updated_us, deleted, content, res_key, expected version_id)
UpdateRow = tuple[int, int, bool, bytes | None, int, int]


class StaleRow(Exception):
    """An update found its row at another version (a concurrent writer got there first)."""

    def __init__(self, resource_type: str, id: str) -> None:
        super().__init__(f"{resource_type}/{id}")
        self.resource_type = resource_type
        self.id = id


class BulkWriter:
    """Writes rows through the DBAPI connection behind ``conn``, in ``conn``'s transaction.

    A write is two steps: :meth:`insert_new` / :meth:`update_current` settle the
    ``resource`` rows (and so the keys), then :meth:`insert_rest` stores the history rows
    and replaces the index rows. Each step is done when it returns.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect
        self.postgres = conn.dialect.name == "postgresql"

    # --- error translation -----------------------------------------------------------------

    @contextmanager
    def _driver(self, statement: str) -> Iterator[Any]:
        """The raw DBAPI connection; driver errors come out as SQLAlchemy exceptions."""
        fairy = self.conn.connection
        raw = fairy.driver_connection
        dbapi = self.dialect.loaded_dbapi
        try:
            yield raw
        except dbapi.Error as exc:
            # a SQLite connection left read-only (or after an I/O error) counts as lost too
            gone = self.dialect.is_disconnect(exc, raw, None) or (not self.postgres and sqlite_connection_broken(exc))
            if gone:
                self.conn.invalidate(exc)
            raise DBAPIError.instance(statement, None, exc, dbapi.Error, connection_invalidated=gone, dialect=self.dialect) from exc

    # --- the two steps of a write ------------------------------------------------------------

    def insert_new(self, rows: Sequence[NewRow]) -> list[int]:
        """Insert new ``resource`` rows; their keys in the same order."""
        if not rows:
            return []
        if not self.postgres:
            with self._driver(RESOURCE_NEW.sqlite_insert) as raw:
                cur = raw.cursor()
                keys = []
                for row in rows:
                    cur.execute(RESOURCE_NEW.sqlite_insert, row)
                    keys.append(cur.lastrowid)
                cur.close()
                return keys
        if len(rows) < COPY_THRESHOLD:
            with self._driver(_PG_INSERT_RETURNING) as raw, raw.cursor() as cur:
                cur.executemany(_PG_INSERT_RETURNING, rows, returning=True)
                return _returned(cur, len(rows))
        with self._driver(_PG_NEXT_KEYS) as raw, raw.cursor() as cur:
            cur.execute(_PG_NEXT_KEYS, (len(rows),))
            keys = [r[0] for r in cur.fetchall()]
            self._copy(cur, RESOURCE, [(k, *row) for k, row in zip(keys, rows)])
            return keys

    def update_current(self, rows: Sequence[UpdateRow], names: Sequence[tuple[str, str]]) -> None:
        """Move existing ``resource`` rows to their new version; :class:`StaleRow` when one
        is no longer at the expected version (a concurrent writer got there first).
        ``names`` are the rows' (type, id), for the error."""
        if not rows:
            return
        if not self.postgres:
            with self._driver(_SQLITE_UPDATE) as raw:
                cur = raw.cursor()
                try:
                    for row, (rtype, rid) in zip(rows, names):
                        cur.execute(_SQLITE_UPDATE, row)
                        if cur.rowcount != 1:
                            raise StaleRow(rtype, rid)
                finally:
                    cur.close()
            return
        with self._driver(_PG_UPDATE) as raw, raw.cursor() as cur:
            cur.executemany(_PG_UPDATE, rows, returning=True)
            found = _returned(cur, len(rows), allow_missing=True)
        for key, (rtype, rid) in zip(found, names):
            if key is None:
                raise StaleRow(rtype, rid)

    def insert_rest(self, versions: list[tuple[Any, ...]], stale_keys: list[int], index: dict[str, list[tuple[Any, ...]]]) -> None:
        """History rows, removal of replaced index rows, and the new index rows."""
        if not self.postgres:
            with self._driver(VERSION.sqlite_insert) as raw:
                cur = raw.cursor()
                if versions:
                    cur.executemany(VERSION.sqlite_insert, versions)
                for start in range(0, len(stale_keys), _SQLITE_IN_CHUNK):
                    chunk = stale_keys[start : start + _SQLITE_IN_CHUNK]
                    marks = ", ".join("?" * len(chunk))
                    for table in INDEX_TABLES:
                        cur.execute(f"DELETE FROM {table.name} WHERE res_key IN ({marks})", chunk)
                for name, rows in index.items():
                    if rows:
                        cur.executemany(INDEX[name].sqlite_insert, rows)
                cur.close()
            return
        total = len(versions) + sum(len(r) for r in index.values())
        if len(versions) < COPY_THRESHOLD and total < COPY_THRESHOLD * 20:
            with self._driver(VERSION.pg_insert) as raw, raw.pipeline(), raw.cursor() as cur:
                self._pg_statements(cur, versions, stale_keys, index, copy=False)
            return
        with self._driver(VERSION.pg_copy) as raw, raw.cursor() as cur:
            self._pg_statements(cur, versions, stale_keys, index, copy=True)

    def _pg_statements(self, cur: Any, versions: list[tuple[Any, ...]], stale_keys: list[int], index: dict[str, list[tuple[Any, ...]]], *, copy: bool) -> None:
        if stale_keys:
            for table in INDEX_TABLES:
                cur.execute(f"DELETE FROM {table.name} WHERE res_key = ANY(%s)", (stale_keys,))
        put: Callable[[Any, TableSpec, list[tuple[Any, ...]]], None] = self._copy if copy else _executemany
        if versions:
            put(cur, VERSION, versions)
        for name, rows in index.items():
            if rows:
                put(cur, INDEX[name], rows)

    @staticmethod
    def _copy(cur: Any, spec: TableSpec, rows: list[tuple[Any, ...]]) -> None:
        floats = spec.float_positions
        with cur.copy(spec.pg_copy) as cp:
            cp.set_types(list(spec.pg_types))
            write = cp.write_row
            if floats:
                for row in rows:
                    row = list(row)
                    for i in floats:
                        if row[i] is not None:
                            row[i] = float(row[i])
                    write(row)
            else:
                for row in rows:
                    write(row)


def _executemany(cur: Any, spec: TableSpec, rows: list[tuple[Any, ...]]) -> None:
    cur.executemany(spec.pg_insert, rows)


def _returned(cur: Any, expected: int, *, allow_missing: bool = False) -> list[Any]:
    """The first column of each result set of an ``executemany(..., returning=True)``."""
    out: list[Any] = []
    while True:
        row = cur.fetchone()
        if row is None and not allow_missing:
            raise RuntimeError("a RETURNING statement returned no row")
        out.append(None if row is None else row[0])
        if not cur.nextset():
            break
    if len(out) != expected:
        raise RuntimeError(f"expected {expected} RETURNING results, got {len(out)}")
    return out


__all__ = ["BulkWriter", "StaleRow", "INDEX", "COPY_THRESHOLD"]
