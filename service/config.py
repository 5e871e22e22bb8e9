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


def _env_bool(name: str) -> bool | None:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return None
    return raw not in ("0", "false", "no", "off")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())


AUTH_MODES = ("smart", "off")


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
    #: ``smart`` (SMART Backend Services bearer tokens, the default) or ``off`` (no
    #: authorization; only allowed when the server binds a loopback address, contract §1).
    auth: str = "smart"
    #: The address ``trialfhir serve`` binds (set by the CLI for its workers); with
    #: ``auth`` off a non-loopback address is refused at start-up.
    bind_host: str = ""
    #: Lifetime of the access tokens the token endpoint issues, in seconds (≤ 300 advised).
    token_lifetime_seconds: int = 300
    #: Write an AuditEvent for every request; None = on exactly when ``auth`` is ``smart``.
    audit: bool | None = None
    #: Origins allowed to call the API from a browser (CORS); empty = CORS off.
    cors_origins: tuple[str, ...] = ()
    #: A GET/HEAD that has not started answering after this many seconds gets a 503.
    request_timeout_seconds: float = 120.0
    #: A request body that has not fully arrived after this many seconds gets a 408.
    body_timeout_seconds: float = 60.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def auth_enabled(self) -> bool:
        return self.auth != "off"

    @property
    def audit_enabled(self) -> bool:
        return self.auth_enabled if self.audit is None else self.audit

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
            "auth": os.environ.get("TRIALFHIR_AUTH", "smart").strip().lower() or "smart",
            "bind_host": os.environ.get("TRIALFHIR_BIND_HOST", ""),
            "token_lifetime_seconds": _env_int("TRIALFHIR_TOKEN_LIFETIME_SECONDS", 300),
            "audit": _env_bool("TRIALFHIR_AUDIT"),
            "cors_origins": _env_list("TRIALFHIR_CORS_ORIGINS"),
            "request_timeout_seconds": _env_float("TRIALFHIR_REQUEST_TIMEOUT_SECONDS", 120.0),
            "body_timeout_seconds": _env_float("TRIALFHIR_BODY_TIMEOUT_SECONDS", 60.0),
        }
        values.update(overrides)
        if "database_url" in overrides:
            values["database_url"] = normalise_database_url(str(overrides["database_url"]))
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.auth not in AUTH_MODES:
            raise ValueError(f"TRIALFHIR_AUTH={settings.auth!r}: use 'smart' (the default) or 'off'.")
        return settings
