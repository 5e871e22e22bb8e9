"""Alembic environment for trialfhir: one migration history for SQLite and PostgreSQL.

The database URL comes from the caller (``service.db.migrate.upgrade``) through
``config.attributes["connection"]`` or the ``sqlalchemy.url`` option, falling back to
``TRIALFHIR_DATABASE_URL``. Run ``trialfhir migrate`` rather than calling alembic directly.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from service.config import normalise_database_url
from service.db.schema import metadata

config = context.config
target_metadata = metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or normalise_database_url(
        os.environ.get("TRIALFHIR_DATABASE_URL", "sqlite:///./trialfhir.db")
    )
    engine = create_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():  # pragma: no cover - offline SQL generation is not used
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
