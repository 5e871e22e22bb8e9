"""Scratch databases for the search benchmark and the bulk loader.

The loader writes the rows of :mod:`bench.search_data` straight into the service's tables
(migrated by :func:`service.db.migrate.upgrade`): the secondary indexes the migrations
created are read back from the catalogue, dropped, the rows inserted in large batches
(``executemany`` on SQLite, ``COPY`` on PostgreSQL), and the very same index definitions
re-created afterwards — the usual bulk-load recipe; the resulting database is the one the
service would have built row by row. Then ``ANALYZE`` (SQLite) or ``VACUUM ANALYZE``
(PostgreSQL: the steady state autovacuum would reach, with a set visibility map, and no
autovacuum run in the middle of the measurements).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from bench.search_data import GeneratedData, table_columns
from service.db.engine import make_engine
from service.db.migrate import upgrade

PG_ADMIN_URL = os.environ.get("TRIALFHIR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TABLE_ORDER = ["resource", "resource_version", "idx_token", "idx_token_text", "idx_string", "idx_date", "idx_number",
               "idx_quantity", "idx_reference", "idx_uri", "idx_composite"]


@dataclass
class BenchDB:
    """A fresh database: a temp SQLite file or ``bench_search_<pid>`` on PostgreSQL."""

    backend: str
    url: str = ""
    engine: Engine | None = None
    tmpdir: str | None = None
    dbname: str | None = None
    #: reuse/keep a named database (SQLite: a directory) instead of a throw-away one
    keep: str | None = None

    def __enter__(self) -> "BenchDB":
        if self.backend == "sqlite":
            if self.keep:
                Path(self.keep).mkdir(parents=True, exist_ok=True)
                for old in Path(self.keep).glob("bench.db*"):
                    old.unlink()
                self.tmpdir = self.keep
            else:
                self.tmpdir = tempfile.mkdtemp(prefix="trialfhir-search-bench-")
            self.url = f"sqlite:///{self.tmpdir}/bench.db"
        else:
            self.dbname = self.keep or f"bench_search_{os.getpid()}"
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{self.dbname}"'))
                    conn.execute(text(f'CREATE DATABASE "{self.dbname}"'))
            finally:
                admin.dispose()
            self.url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{self.dbname}"
        self.engine = make_engine(self.url)
        upgrade(self.engine)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.engine is not None:
            self.engine.dispose()
        if self.keep:
            return
        if self.backend == "sqlite":
            if self.tmpdir:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
        else:
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)'))
            finally:
                admin.dispose()

    @property
    def sqlite_path(self) -> str:
        return self.url.split("sqlite:///", 1)[1]

    def pg_conninfo(self) -> str:
        assert self.engine is not None
        return self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def size_bytes(self) -> int:
        if self.backend == "sqlite":
            return sum(p.stat().st_size for p in Path(self.sqlite_path).parent.glob("bench.db*"))
        assert self.engine is not None
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())


@dataclass
class LoadStats:
    rows: int
    observations: int
    insert_s: float
    index_s: float
    analyze_s: float
    size_bytes: int = 0

    @property
    def total_s(self) -> float:
        return self.insert_s + self.index_s + self.analyze_s


def _secondary_indexes_sqlite(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return [(n, s) for n, s in conn.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL ORDER BY name")]


def _secondary_indexes_pg(cur: Any) -> list[tuple[str, str]]:
    cur.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint) ORDER BY indexname"
    )
    return list(cur.fetchall())


def bulk_load(db: BenchDB, data: GeneratedData, log=print) -> LoadStats:  # type: ignore[no-untyped-def]
    cols = table_columns()
    if db.backend == "sqlite":
        return _load_sqlite(db, data, cols, log)
    return _load_pg(db, data, cols, log)


def _progress(log, n_done: int, total: int, t0: float) -> None:  # type: ignore[no-untyped-def]
    el = time.perf_counter() - t0
    log(f"    inserted {n_done:,}/{total:,} rows in {el:.0f} s ({n_done / max(el, 1e-9):,.0f} rows/s)")


def _load_sqlite(db: BenchDB, data: GeneratedData, cols: dict[str, list[str]], log) -> LoadStats:  # type: ignore[no-untyped-def]
    assert db.engine is not None
    db.engine.dispose()
    conn = sqlite3.connect(db.sqlite_path, isolation_level=None)
    # bulk-load settings for this one connection (the service's engine puts WAL back below)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA threads=2")
    indexes = _secondary_indexes_sqlite(conn)
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    sql = {t: f"INSERT INTO {t} ({', '.join(c)}) VALUES ({', '.join('?' * len(c))})" for t, c in cols.items()}
    t0 = time.perf_counter()
    n = 0
    for i, chunk in enumerate(data.chunks()):
        conn.execute("BEGIN")
        for t in TABLE_ORDER:
            if chunk[t]:
                conn.executemany(sql[t], chunk[t])
                n += len(chunk[t])
        conn.execute("COMMIT")
        if i % 10 == 0:
            _progress(log, n, data.n_rows, t0)
    insert_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for name, ddl in indexes:
        conn.execute(ddl)
    index_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode=WAL")
    analyze_s = time.perf_counter() - t2
    conn.close()
    stats = LoadStats(n, data.pop.n_observations, insert_s, index_s, analyze_s)
    stats.size_bytes = db.size_bytes()
    return stats


def _load_pg(db: BenchDB, data: GeneratedData, cols: dict[str, list[str]], log) -> LoadStats:  # type: ignore[no-untyped-def]
    import psycopg

    with psycopg.connect(db.pg_conninfo(), autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET maintenance_work_mem = '1GB'")
        indexes = _secondary_indexes_pg(cur)
        for name, _ in indexes:
            cur.execute(f'DROP INDEX "{name}"')
        t0 = time.perf_counter()
        n = 0
        for i, chunk in enumerate(data.chunks()):
            with conn.transaction():
                for t in TABLE_ORDER:
                    rows = chunk[t]
                    if not rows:
                        continue
                    with cur.copy(f"COPY {t} ({', '.join(cols[t])}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                    n += len(rows)
            if i % 10 == 0:
                _progress(log, n, data.n_rows, t0)
        insert_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _, ddl in indexes:
            cur.execute(ddl)
        cur.execute("SELECT setval(pg_get_serial_sequence('resource', 'res_key'), (SELECT max(res_key) FROM resource))")
        cur.execute("SELECT setval(pg_get_serial_sequence('resource_version', 'seq'), (SELECT max(seq) FROM resource_version))")
        index_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        cur.execute("VACUUM (ANALYZE)")
        analyze_s = time.perf_counter() - t2
    stats = LoadStats(n, data.pop.n_observations, insert_s, index_s, analyze_s)
    stats.size_bytes = db.size_bytes()
    return stats


def analyze(db: BenchDB) -> None:
    """Refresh planner statistics (after the bench itself changed the data)."""
    assert db.engine is not None
    if db.backend == "sqlite":
        with db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    else:
        import psycopg

        with psycopg.connect(db.pg_conninfo(), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
