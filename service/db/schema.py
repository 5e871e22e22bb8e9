"""The database schema (SQLAlchemy Core), identical on SQLite and PostgreSQL.

- ``resource``: one row per (type, id) — the current version, its JSON bytes as the
  client sent them (plus id and meta), and whether it is deleted. Reads and searches
  are served from ``content`` without re-serialising.
- ``resource_version``: every version ever written, deletes included (``content`` is
  NULL for a delete). ``seq`` orders all writes for system history.
- ``idx_token``: search index rows for token parameters (identifier, codes, ids …),
  written in the same transaction as the version they describe. The search capability
  extends the index with more tables; see :mod:`service.search.indexing`.

The Alembic migrations in ``alembic/versions`` create exactly these tables; a test
checks that the migrated schema and this module agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

resource = Table(
    "resource",
    metadata,
    Column("res_key", BigIntPK, primary_key=True, autoincrement=True),
    Column("resource_type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated_us", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", LargeBinary, nullable=True),
    UniqueConstraint("resource_type", "id", name="uq_resource_type_id"),
)
Index("ix_resource_type_updated", resource.c.resource_type, resource.c.last_updated_us)

resource_version = Table(
    "resource_version",
    metadata,
    Column("seq", BigIntPK, primary_key=True, autoincrement=True),
    Column("res_key", BigInteger, nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated_us", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", LargeBinary, nullable=True),
    UniqueConstraint("res_key", "version_id", name="uq_version_res_key_version"),
)
Index("ix_version_type_seq", resource_version.c.resource_type, resource_version.c.seq)

idx_token = Table(
    "idx_token",
    metadata,
    Column("res_key", BigInteger, nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("system", String(512), nullable=True),
    Column("value", String(512), nullable=True),
)
Index("ix_token_lookup", idx_token.c.resource_type, idx_token.c.param, idx_token.c.value, idx_token.c.system)
Index("ix_token_res_key", idx_token.c.res_key)
