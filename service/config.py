"""Runtime settings, read once from the environment.

Every knob the service has lives here so that a reader finds them in one place and
the README can list them. Values come from ``TRIALFHIR_*`` environment variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def normalise_database_url(url: str) -> str:
    """Accept the URL spellings the contract allows and return one SQLAlchemy can use.

    ``postgresql://`` and ``postgres://`` get the psycopg 3 driver; the async spelling
    ``postgresql+asyncpg://`` / ``postgresql+psycopg_async://`` is mapped to the sync
    psycopg driver the service uses (one driver, one code path).
    """
    for prefix in ("postgresql+asyncpg://", "postgresql+psycopg_async://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if url.startswith("sqlite+aiosqlite://"):
        return "sqlite://" + url[len("sqlite+aiosqlite://"):]
    return url


@dataclass(frozen=True)
class Settings:
    """The service's configuration (see README, "Configuration")."""

    database_url: str = "sqlite:///./trialfhir.db"
    #: Public base URL of the FHIR endpoint; derived from each request when empty.
    base_url: str = ""
    #: Largest request body accepted, in bytes (413 above it).
    max_body_bytes: int = 16 * 1024 * 1024
    #: Most entries accepted in one transaction or batch Bundle.
    max_bundle_entries: int = 10_000
    #: Default and maximum page sizes for history and search.
    default_page_size: int = 50
    max_page_size: int = 1000
    #: How often a serialisation conflict is retried before the client gets a 409.
    max_retries: int = 8
    #: SQLAlchemy connection pool size (PostgreSQL).
    pool_size: int = 20
    log_level: str = "INFO"
    run_migrations: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> "Settings":
        values: dict[str, object] = {
            "database_url": normalise_database_url(
                os.environ.get("TRIALFHIR_DATABASE_URL", "sqlite:///./trialfhir.db")
            ),
            "base_url": os.environ.get("TRIALFHIR_BASE_URL", "").rstrip("/"),
            "max_body_bytes": _env_int("TRIALFHIR_MAX_BODY_BYTES", 16 * 1024 * 1024),
            "max_bundle_entries": _env_int("TRIALFHIR_MAX_BUNDLE_ENTRIES", 10_000),
            "default_page_size": _env_int("TRIALFHIR_DEFAULT_PAGE_SIZE", 50),
            "max_page_size": _env_int("TRIALFHIR_MAX_PAGE_SIZE", 1000),
            "max_retries": _env_int("TRIALFHIR_MAX_RETRIES", 8),
            "pool_size": _env_int("TRIALFHIR_POOL_SIZE", 20),
            "log_level": os.environ.get("TRIALFHIR_LOG_LEVEL", "INFO").upper(),
            "run_migrations": os.environ.get("TRIALFHIR_RUN_MIGRATIONS", "1") not in ("0", "false", "no"),
        }
        values.update(overrides)
        if "database_url" in overrides:
            values["database_url"] = normalise_database_url(str(overrides["database_url"]))
        return cls(**values)  # type: ignore[arg-type]
