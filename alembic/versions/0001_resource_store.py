"""Resource store: current versions, full history, token index.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resource",
        sa.Column("res_key", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated_us", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=True),
        sa.UniqueConstraint("resource_type", "id", name="uq_resource_type_id"),
    )
    op.create_index("ix_resource_type_updated", "resource", ["resource_type", "last_updated_us"])
    op.create_table(
        "resource_version",
        sa.Column("seq", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("res_key", sa.BigInteger, nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated_us", sa.BigInteger, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=True),
        sa.UniqueConstraint("res_key", "version_id", name="uq_version_res_key_version"),
    )
    op.create_index("ix_version_type_seq", "resource_version", ["resource_type", "seq"])
    op.create_table(
        "idx_token",
        sa.Column("res_key", sa.BigInteger, nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("param", sa.String(100), nullable=False),
        sa.Column("system", sa.String(512), nullable=True),
        sa.Column("value", sa.String(512), nullable=True),
    )
    op.create_index("ix_token_lookup", "idx_token", ["resource_type", "param", "value", "system"])
    op.create_index("ix_token_res_key", "idx_token", ["res_key"])


def downgrade() -> None:
    op.drop_table("idx_token")
    op.drop_table("resource_version")
    op.drop_table("resource")
