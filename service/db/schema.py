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
    Float,
    String,
    Text,
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
Index("ix_token_lookup", idx_token.c.resource_type, idx_token.c.param, idx_token.c.value, idx_token.c.system, idx_token.c.res_key)
Index("ix_token_res_key", idx_token.c.res_key)

# --- migration 0002: the other parameter types -------------------------------------------
# Each table holds rows for the current, non-deleted version only (rows are replaced on
# every write), so a search never needs to look at resource.deleted.

idx_token_text = Table(
    "idx_token_text",
    metadata,
    Column("res_key", BigInteger, nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("text", String(512), nullable=False),
)
Index("ix_token_text_lookup", idx_token_text.c.resource_type, idx_token_text.c.param, idx_token_text.c.text, idx_token_text.c.res_key)
Index("ix_token_text_res_key", idx_token_text.c.res_key)

idx_string = Table(
    "idx_string",
    metadata,
    Column("res_key", BigInteger, nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("norm", String(512), nullable=False),
    Column("value", String(512), nullable=False),
)
Index("ix_string_lookup", idx_string.c.resource_type, idx_string.c.param, idx_string.c.norm, idx_string.c.res_key)
Index("ix_string_res_key", idx_string.c.res_key)

idx_date = Table(
    "idx_date",
    metadata,
    Column("res_key", BigInteger, nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("lo", BigInteger, nullable=False),
    Column("hi", BigInteger, nullable=False),
)
Index("ix_date_lookup", idx_date.c.resource_type, idx_date.c.param, idx_date.c.lo, idx_date.c.hi, idx_date.c.res_key)
Index("ix_date_res_key", idx_date.c.res_key)

idx_number = Table(
    "idx_number",
    metadata,
    Column("res_key", BigInteger, nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("value", Float(53), nullable=False),
)
Index("ix_number_lookup", idx_number.c.resource_type, idx_number.c.param, idx_number.c.value, idx_number.c.res_key)
Index("ix_number_res_key", idx_number.c.res_key)

idx_quantity = Table(
    "idx_quantity",
    metadata,
    Column("res_key", BigInteger, nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("value", Float(53), nullable=False),
    Column("system", String(512), nullable=True),
    Column("code", String(128), nullable=True),
    Column("unit", String(128), nullable=True),
    Column("canon_value", Float(53), nullable=True),
    Column("canon_code", String(128), nullable=True),
)
Index("ix_quantity_lookup", idx_quantity.c.resource_type, idx_quantity.c.param, idx_quantity.c.canon_code, idx_quantity.c.canon_value, idx_quantity.c.res_key)
Index("ix_quantity_value", idx_quantity.c.resource_type, idx_quantity.c.param, idx_quantity.c.value, idx_quantity.c.res_key)
Index("ix_quantity_res_key", idx_quantity.c.res_key)

idx_reference = Table(
    "idx_reference",
    metadata,
    Column("res_key", BigInteger, nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("target_version", String(64), nullable=True),
    #: the reference as written when it is absolute, canonical or contained ("#p1")
    Column("url", String(1024), nullable=True),
    Column("ident_system", String(512), nullable=True),
    Column("ident_value", String(512), nullable=True),
)
Index("ix_reference_lookup", idx_reference.c.resource_type, idx_reference.c.param, idx_reference.c.target_id, idx_reference.c.target_type, idx_reference.c.res_key)
Index("ix_reference_target", idx_reference.c.target_type, idx_reference.c.target_id, idx_reference.c.resource_type, idx_reference.c.param, idx_reference.c.res_key)
Index("ix_reference_res_key", idx_reference.c.res_key)

idx_uri = Table(
    "idx_uri",
    metadata,
    Column("res_key", BigInteger, nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("value", String(1024), nullable=False),
)
Index("ix_uri_lookup", idx_uri.c.resource_type, idx_uri.c.param, idx_uri.c.value, idx_uri.c.res_key)
Index("ix_uri_res_key", idx_uri.c.res_key)

idx_composite = Table(
    "idx_composite",
    metadata,
    Column("res_key", BigInteger, nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("c1_system", String(512), nullable=True),
    Column("c1_value", String(512), nullable=True),
    Column("c2_system", String(512), nullable=True),
    Column("c2_value", String(512), nullable=True),
    Column("c2_number", Float(53), nullable=True),
    Column("c2_canon_value", Float(53), nullable=True),
    Column("c2_canon_code", String(128), nullable=True),
    Column("c2_lo", BigInteger, nullable=True),
    Column("c2_hi", BigInteger, nullable=True),
    Column("c2_unit", String(512), nullable=True),  # migration 0004
)
Index("ix_composite_lookup", idx_composite.c.resource_type, idx_composite.c.param, idx_composite.c.c1_value, idx_composite.c.res_key)
Index("ix_composite_res_key", idx_composite.c.res_key)

#: Bumped by ``trialfhir reindex``: servers reload the search parameter table when it changes.
search_state = Table(
    "search_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("generation", Integer, nullable=False),
)

INDEX_TABLES = (idx_token, idx_token_text, idx_string, idx_date, idx_number, idx_quantity, idx_reference, idx_uri, idx_composite)

# --- migration 0003: Bulk Data export jobs (service.bulk) ------------------------------------
# One row per $export job: its request, its transactionTime, who runs it (a lease that a
# dead process stops renewing), its checkpoint (JSON: files written and the last res_key),
# and the manifest once complete. ``bulk_export_key`` holds the res_keys a Group or Patient
# export covers, materialised once per job so the export streams them in res_key order.

bulk_export_job = Table(
    "bulk_export_job",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("level", String(16), nullable=False),
    Column("group_id", String(64), nullable=True),
    Column("request_url", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("transaction_time_us", BigInteger, nullable=False),
    Column("client_id", String(256), nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("finished_us", BigInteger, nullable=True),
    Column("expires_us", BigInteger, nullable=True),
    Column("owner", String(128), nullable=True),
    Column("lease_until_us", BigInteger, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("checkpoint", Text, nullable=True),
    Column("manifest", Text, nullable=True),
    Column("error", Text, nullable=True),
)
Index("ix_bulk_export_job_status", bulk_export_job.c.status, bulk_export_job.c.lease_until_us)

bulk_export_key = Table(
    "bulk_export_key",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("res_key", BigInteger, primary_key=True, autoincrement=False),
    #: exported whatever its lastUpdated: in the compartment of a patient who joined the
    #: Group after ``_since`` (the registry has none of that patient's history yet)
    Column("new_member", Boolean, nullable=False),
)

# --- migration 0005: authorization (service.auth) ------------------------------------------
# Registered SMART Backend Services clients (their JWKS inline or by URL, the scopes they may
# be granted and the studies they are bound to), the access tokens issued (by SHA-256 of
# the token: a stolen database copy holds no usable token) and the client-assertion ``jti``
# values seen before they expire (replay protection).

auth_client = Table(
    "auth_client",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("jwks", Text, nullable=True),
    Column("jwks_url", String(2048), nullable=True),
    Column("scopes", Text, nullable=False),
    #: JSON list of study ids; NULL = not bound to studies
    Column("studies", Text, nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False),
)

auth_token = Table(
    "auth_token",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("studies", Text, nullable=True),
    Column("expires_us", BigInteger, nullable=False),
)
Index("ix_auth_token_expires", auth_token.c.expires_us)

auth_jti = Table(
    "auth_jti",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti_hash", String(64), primary_key=True),
    Column("expires_us", BigInteger, nullable=False),
)
Index("ix_auth_jti_expires", auth_jti.c.expires_us)
