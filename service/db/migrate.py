"""Apply the Alembic migrations (``trialfhir migrate`` and start-up).

On PostgreSQL an advisory lock makes concurrent start-ups (several workers or
processes) migrate one at a time; the others find the schema current and do nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

_MIGRATION_LOCK = 7_402_113_991


def script_location() -> Path:
    """The Alembic scripts: ``alembic/`` in a checkout, ``trialfhir_migrations`` when installed."""
    checkout = Path(__file__).resolve().parents[2] / "alembic"
    if (checkout / "env.py").exists():
        return checkout
    spec = importlib.util.find_spec("trialfhir_migrations")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the trialfhir migrations are not installed")
    return Path(list(spec.submodule_search_locations)[0])


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database behind ``engine`` to ``revision``."""
    cfg = alembic_config()
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
            conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
        finally:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
                conn.commit()
