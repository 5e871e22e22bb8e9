"""Migrations, the CLI, JSON logs and the request context."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from service.db.schema import metadata

ROOT = Path(__file__).resolve().parents[1]


def test_migrated_schema_matches_the_code(app) -> None:  # type: ignore[no-untyped-def]
    """The Alembic history and service.db.schema describe the same tables (both backends)."""
    engine = app.state.store.engine
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_cli_migrate_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    env = dict(os.environ, TRIALFHIR_DATABASE_URL=f"sqlite:///{db}")
    out = subprocess.run([str(Path(sys.executable).parent / "trialfhir"), "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "up to date" in out.stdout
    tables = set(inspect(create_engine(f"sqlite:///{db}")).get_table_names())
    assert {"resource", "resource_version", "idx_token", "alembic_version"} <= tables
    # running it again is a no-op
    again = subprocess.run([str(Path(sys.executable).parent / "trialfhir"), "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr


def test_cli_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "service.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "serve" in out.stdout and "migrate" in out.stdout


def test_access_log_is_json_with_request_id(client) -> None:  # type: ignore[no-untyped-def]
    from service.observability import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("trialfhir.access")
    logger.addHandler(handler)
    old = logging.getLogger("trialfhir").level
    logging.getLogger("trialfhir").setLevel(logging.INFO)
    try:
        client.get("/fhir/Patient/nope", headers={"X-Request-ID": "req-42"})
    finally:
        logging.getLogger("trialfhir").setLevel(old)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["request_id"] == "req-42"
    assert line["status"] == 404 and line["method"] == "GET" and line["path"] == "/fhir/Patient/nope"
    assert isinstance(line["duration_ms"], float)


def test_database_url_spellings() -> None:
    from service.config import normalise_database_url

    assert normalise_database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_database_url("postgresql+asyncpg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_database_url("sqlite:///./x.db") == "sqlite:///./x.db"


def test_request_context_is_built_in_one_place(client) -> None:  # type: ignore[no-untyped-def]
    """Every FHIR route that acts for a caller takes the context from one dependency."""
    from fastapi.routing import APIRoute

    from service.context import request_context

    from service.rest.router import router

    write_routes = [r for r in router.routes if isinstance(r, APIRoute) and r.methods & {"POST", "PUT", "PATCH", "DELETE"}]
    assert write_routes
    for route in write_routes:
        deps = {d.call for d in route.dependant.dependencies}
        assert request_context in deps, route.path


def test_every_package_is_listed_for_installation() -> None:
    """A non-editable ``pip install .`` ships every package (pyproject lists them explicitly)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("service", "mappers", "schemas")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject [tool.setuptools].packages: {sorted(found - listed)}"
