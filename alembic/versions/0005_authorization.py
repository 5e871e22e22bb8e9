"""Authorization: registered clients, issued access tokens, seen client-assertion jti's.

SMART App Launch v2 Backend Services (client-confidential-asymmetric): clients are
registered with ``trialfhir clients add`` (JWKS inline or by URL, the scopes they may be
granted, the studies they are bound to); access tokens are stored by SHA-256 only; the
``jti`` of every accepted client assertion is kept until the assertion expires, so a
replayed assertion is refused. AuditEvents are ordinary resources (no table here).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_client",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("jwks", sa.Text, nullable=True),
        sa.Column("jwks_url", sa.String(2048), nullable=True),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("studies", sa.Text, nullable=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    op.create_table(
        "auth_token",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("studies", sa.Text, nullable=True),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_auth_token_expires", "auth_token", ["expires_us"])
    op.create_table(
        "auth_jti",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("jti_hash", sa.String(64), primary_key=True),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_auth_jti_expires", "auth_jti", ["expires_us"])


def downgrade() -> None:
    op.drop_index("ix_auth_jti_expires", table_name="auth_jti")
    op.drop_table("auth_jti")
    op.drop_index("ix_auth_token_expires", table_name="auth_token")
    op.drop_table("auth_token")
    op.drop_table("auth_client")
