"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

Backends come from ``TRIALFHIR_TEST_BACKENDS`` (default ``sqlite,postgresql``). The
PostgreSQL admin URL is ``TRIALFHIR_TEST_PG_URL`` (default the local server, user
postgres, trust auth); each test session creates its own databases and drops them at
the end. When PostgreSQL is not reachable outside CI its tests are skipped with the
reason; under ``CI=true`` that is an error, so CI can never pass on SQLite alone.

Fixtures:
- ``backend``: "sqlite" | "postgresql" (session-scoped, parametrised);
- ``app`` / ``client``: the ASGI app for that backend and a TestClient on a clean store;
- ``live_server``: a real ``trialfhir serve`` process (uvicorn over loopback) on that
  backend, for third-party clients and concurrency tests;
- ``hl7_examples``: the official R4 examples directory (checksum-pinned, cached).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("TRIALFHIR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = [b.strip() for b in os.environ.get("TRIALFHIR_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]
IN_CI = os.environ.get("CI", "").lower() == "true"
# Authorization is on by default (issue 8). The suite's in-process apps and its loopback
# live servers run without it — TRIALFHIR_AUTH=off is allowed there (contract §1);
# tests/test_auth.py turns it on explicitly.
os.environ.setdefault("TRIALFHIR_AUTH", "off")

def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.__class__.__name__}"


class Databases:
    """Creates throw-away databases for one test session and drops them afterwards."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pg_created: list[str] = []

    def url(self, backend: str, name: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self.tmp / (name + '.db')}"
        reason = _pg_available()
        if reason:
            if IN_CI:
                pytest.fail(f"{reason} — CI must test PostgreSQL")
            pytest.skip(reason)
        db = f"tf_{name}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{db}"'))
        admin.dispose()
        self.pg_created.append(db)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + db

    def drop_all(self) -> None:
        if not self.pg_created:
            return
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for db in self.pg_created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    dbs = Databases(tmp_path_factory.mktemp("db"))
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def database_url(backend: str, databases: Databases) -> str:
    return databases.url(backend, "app")


@pytest.fixture(scope="session")
def app(database_url: str):  # type: ignore[no-untyped-def]
    from service.app import create_app
    from service.config import Settings

    application = create_app(Settings.from_env(database_url=database_url, max_body_bytes=4 * 1024 * 1024))
    logging.getLogger("trialfhir").setLevel(logging.WARNING)
    return application


def clean_store(app) -> None:  # type: ignore[no-untyped-def]
    """Empty every table (the schema stays)."""
    from service.db.schema import INDEX_TABLES, resource, resource_version

    tables = [resource, resource_version, *INDEX_TABLES]
    engine = app.state.store.engine
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
        else:
            for table in tables:
                conn.execute(table.delete())


@pytest.fixture()
def client(app):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    clean_store(app)
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """A ``trialfhir serve`` process; ``base`` is its FHIR base URL."""

    url: str
    database_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base(self) -> str:
        return self.url + "/fhir"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_server(database_url: str, log_dir: Path, *, workers: int = 1, extra_env: dict[str, str] | None = None) -> LiveServer:
    """Start ``trialfhir serve`` on a free loopback port and wait until /readyz answers."""
    port = free_port()
    env = dict(os.environ, TRIALFHIR_DATABASE_URL=database_url, TRIALFHIR_LOG_LEVEL="WARNING", **(extra_env or {}))
    log_path = log_dir / f"server-{port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return LiveServer(url, database_url, proc, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not become ready: {log_path.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def live_server(backend: str, databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One live server per backend for the whole session (tests use unique identifiers)."""
    server = start_server(databases.url(backend, "live"), tmp_path_factory.mktemp("live"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hl7_examples() -> Path:
    """The official hl7.fhir.r4.examples@4.0.1 files (npm pack, sha256-pinned, cached)."""
    from service.fhir.definitions.hl7_package import ensure_hl7_examples

    return ensure_hl7_examples()

