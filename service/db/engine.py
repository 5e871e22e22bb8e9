"""Engines and transactions for SQLite and PostgreSQL behind one interface.

Writes run in :func:`run_in_transaction`, which makes every write race-free by making
conflicting writers *queue* rather than fail:

- PostgreSQL: READ COMMITTED with explicit locks. A write by id locks the resource's row
  (``SELECT … FOR UPDATE``), so concurrent updates of one resource run one after the
  other, each on the latest version. A conditional interaction first takes a transaction
  advisory lock per search criterion (:func:`lock_criteria`): concurrent conditional
  creates with the same identifier queue on it, and the second one's search sees the
  first one's committed resource. Unique-key violations and deadlocks are re-run.
  (SERIALIZABLE was tried first: under a burst of updates to one resource every waiter
  but one failed per round, so clients saw 409s; queueing gives them all a 200.)
- SQLite: ``BEGIN IMMEDIATE`` takes the database write lock up front, so writers queue
  instead of failing on lock upgrade; WAL keeps readers unblocked.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool, QueuePool

from service.fhir.outcome import error

T = TypeVar("T")

WRITE_OPTION = "trialfhir_write"
#: Advisory lock key of the bulk export write fence (see :func:`run_in_transaction`).
WRITE_FENCE_KEY = 7_402_113_992

#: The engine of the unit of work running in this context (the search registry is per database).
active_engine: ContextVar[Engine | None] = ContextVar("active_engine", default=None)


class TransactionConflict(Exception):
    """A concurrent writer changed what this transaction read; re-running it is safe."""


def sqlite_connection_broken(exc: BaseException) -> bool:
    """A SQLite connection that must not go back to the pool: opened while the file was not
    writable (it stays read-only for life), or after an I/O error / full disk. The engine's
    ``handle_error`` hook and :mod:`service.storage.bulk` (which talks to the driver
    directly) both invalidate it, so the server recovers once the file is writable."""
    text = str(exc).lower()
    return "readonly database" in text or "disk i/o error" in text or "database or disk is full" in text


def make_engine(url: str, *, pool_size: int = 20) -> Engine:
    """Create the engine for ``url`` with the pragmas and pool each backend needs."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=QueuePool if ":memory:" not in url else NullPool,
            pool_size=pool_size,
            max_overflow=pool_size,
            # Last in, first out: a connection's page cache survives only while no other
            # connection writes, so handing out the most recently used one keeps it warm;
            # first-in-first-out rotated through the pool and re-read every B-tree page a
            # write touched (~60 reads per create, ~0.3 ms of 1 ms).
            **({"pool_use_lifo": True} if ":memory:" not in url else {}),
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # 16 MB of page cache (default 2 MB): a transaction Bundle's index rows land on
            # pages all over the index B-trees.
            cur.execute("PRAGMA cache_size=-16384")
            # Checkpoint the WAL every 10,000 pages (~40 MB) instead of every 1,000: the
            # checkpoint runs inside the committing request and ends with an fsync; a create
            # writes ~45 pages, so the default put one in every ~22 creates (a third of a
            # create's time). Pages rewritten between checkpoints are copied once, and the
            # WAL file is cut back to 64 MB after each reset.
            cur.execute("PRAGMA wal_autocheckpoint=10000")
            cur.execute("PRAGMA journal_size_limit=67108864")
            cur.close()

        @event.listens_for(engine, "handle_error")
        def _sqlite_drop_broken_connection(ctx):  # type: ignore[no-untyped-def]
            # A connection opened while the file was not writable (read-only or immutable
            # file, read-only remount) stays read-only for life, even once the file is
            # writable again; after an I/O error (disk full, failing disk) it is not to be
            # trusted either. Treat both like a lost connection: the pool drops it, the
            # request gets the 503 (service.errors), and later requests get fresh
            # connections — the server recovers without a restart (tests/test_reliability.py).
            if sqlite_connection_broken(ctx.original_exception):
                ctx.is_disconnect = True

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            options = conn.get_execution_options()
            if options.get("isolation_level") == "AUTOCOMMIT":
                return  # single-statement reads: no transaction needed
            if options.get(WRITE_OPTION):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # The most recently used connection first: its server process has the catalog
        # and psycopg's prepared statements warm (they are per connection).
        pool_use_lifo=True,
        # No pre-ping: it costs a round trip per request. A connection that died with a
        # database restart fails once, SQLAlchemy then invalidates the whole pool, and the
        # request is answered 503 (service.errors); the next ones reconnect.
        pool_recycle=1800,
        # psycopg prepares a statement after 5 executions, and PostgreSQL then switches to
        # a generic plan that cannot see the parameter values: a token search estimated
        # ``code = $1`` at 8 rows for a code with 100,000 and chose nested loops (seconds
        # at 1M Observations). Custom plans keep the values visible; parsing stays cached.
        connect_args={"options": "-c plan_cache_mode=force_custom_plan"},
    )


@contextmanager
def single_read(engine: Engine) -> Iterator[Connection]:
    """A connection for one statement (a read by id): no BEGIN/COMMIT round trips."""
    active_engine.set(engine)
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-only unit of work (one consistent snapshot on PostgreSQL)."""
    active_engine.set(engine)
    with engine.connect() as conn:
        if is_postgres(engine):
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError):
        code = getattr(getattr(exc, "orig", None), "sqlstate", None)
        if code in ("40001", "40P01"):  # serialization_failure, deadlock_detected
            return True
        if code == "23505":  # unique_violation: a concurrent writer won; re-run sees it
            return True
        if isinstance(exc, OperationalError) and "database is locked" in str(exc.orig):
            return True
    return False


def lock_criteria(conn: Connection, resource_type: str, pairs: list[tuple[str, str]]) -> None:
    """Serialise conditional interactions on the same criteria (PostgreSQL; SQLite's write
    lock already does). One advisory lock per ``name=value`` criterion, taken in sorted
    order so two requests never wait on each other crosswise."""
    lock_criteria_many(conn, [(resource_type, name, value) for name, value in pairs])


#: Takes the advisory locks of a sorted key array in array order, in one round trip.
#: (PostgreSQL evaluates a volatile select-list function after ORDER BY.)
_LOCK_KEYS = (
    "SELECT pg_advisory_xact_lock(hashtextextended(u.k, 0)) "
    "FROM unnest(CAST(%s AS text[])) WITH ORDINALITY AS u(k, n) ORDER BY u.n"
)


def lock_criteria_many(conn: Connection, criteria: list[tuple[str, str, str]]) -> None:
    """:func:`lock_criteria` for (type, name, value) triples of several types at once: the
    locks of all of them, in (type, name, value) order, with one statement."""
    if conn.dialect.name != "postgresql" or not criteria:
        return
    keys = [f"{rtype}?{name}={value}" for rtype, name, value in sorted(set(criteria))]
    conn.exec_driver_sql(_LOCK_KEYS, (keys,))


def run_in_transaction(engine: Engine, work: Callable[[Connection], T], *, max_retries: int = 8) -> T:
    """Run ``work(conn)`` in one write transaction, re-running it on a serialization conflict.

    ``work`` must be free of side effects outside the database (it may run more than
    once). After ``max_retries`` conflicts the client gets a 409 it can retry.
    """
    active_engine.set(engine)
    attempt = 0
    while True:
        try:
            with engine.connect() as conn:
                if is_postgres(engine):
                    conn = conn.execution_options(isolation_level="READ COMMITTED")
                else:
                    conn = conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    if is_postgres(engine):
                        # Bulk export write fence: every write holds this lock shared until it
                        # commits; an $export kick-off takes it exclusively (service.bulk.jobs),
                        # so its transactionTime follows every earlier write's commit and
                        # precedes every later write's lastUpdated. (SQLite: BEGIN IMMEDIATE.)
                        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({WRITE_FENCE_KEY})")
                    return work(conn)
        except (DBAPIError, TransactionConflict) as exc:
            if isinstance(exc, DBAPIError) and not _retryable(exc):
                raise
            attempt += 1
            if attempt > max_retries:
                raise error(
                    409,
                    "conflict",
                    "The resource was changed by a concurrent request and the change could not be "
                    "serialised; retry the request.",
                ) from exc
            time.sleep(min(0.2, 0.002 * (2**attempt)) * random.random())
