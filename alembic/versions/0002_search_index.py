"""Search index tables for every parameter type, and the search-parameter generation.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _common() -> list[sa.Column]:
    return [
        sa.Column("res_key", sa.BigInteger, nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("param", sa.String(100), nullable=False),
    ]


def upgrade() -> None:
    op.drop_index("ix_token_lookup", table_name="idx_token")
    op.create_index("ix_token_lookup", "idx_token", ["resource_type", "param", "value", "system", "res_key"])

    op.create_table("idx_token_text", *_common(), sa.Column("text", sa.String(512), nullable=False))
    op.create_index("ix_token_text_lookup", "idx_token_text", ["resource_type", "param", "text", "res_key"])
    op.create_index("ix_token_text_res_key", "idx_token_text", ["res_key"])

    op.create_table("idx_string", *_common(), sa.Column("norm", sa.String(512), nullable=False), sa.Column("value", sa.String(512), nullable=False))
    op.create_index("ix_string_lookup", "idx_string", ["resource_type", "param", "norm", "res_key"])
    op.create_index("ix_string_res_key", "idx_string", ["res_key"])

    op.create_table("idx_date", *_common(), sa.Column("lo", sa.BigInteger, nullable=False), sa.Column("hi", sa.BigInteger, nullable=False))
    op.create_index("ix_date_lookup", "idx_date", ["resource_type", "param", "lo", "hi", "res_key"])
    op.create_index("ix_date_res_key", "idx_date", ["res_key"])

    op.create_table("idx_number", *_common(), sa.Column("value", sa.Float(53), nullable=False))
    op.create_index("ix_number_lookup", "idx_number", ["resource_type", "param", "value", "res_key"])
    op.create_index("ix_number_res_key", "idx_number", ["res_key"])

    op.create_table(
        "idx_quantity",
        *_common(),
        sa.Column("value", sa.Float(53), nullable=False),
        sa.Column("system", sa.String(512), nullable=True),
        sa.Column("code", sa.String(128), nullable=True),
        sa.Column("unit", sa.String(128), nullable=True),
        sa.Column("canon_value", sa.Float(53), nullable=True),
        sa.Column("canon_code", sa.String(128), nullable=True),
    )
    op.create_index("ix_quantity_lookup", "idx_quantity", ["resource_type", "param", "canon_code", "canon_value", "res_key"])
    op.create_index("ix_quantity_value", "idx_quantity", ["resource_type", "param", "value", "res_key"])
    op.create_index("ix_quantity_res_key", "idx_quantity", ["res_key"])

    op.create_table(
        "idx_reference",
        *_common(),
        sa.Column("target_type", sa.String(64), nullable=True),
        sa.Column("target_id", sa.String(64), nullable=True),
        sa.Column("target_version", sa.String(64), nullable=True),
        sa.Column("url", sa.String(1024), nullable=True),
        sa.Column("ident_system", sa.String(512), nullable=True),
        sa.Column("ident_value", sa.String(512), nullable=True),
    )
    op.create_index("ix_reference_lookup", "idx_reference", ["resource_type", "param", "target_id", "target_type", "res_key"])
    op.create_index("ix_reference_target", "idx_reference", ["target_type", "target_id", "resource_type", "param", "res_key"])
    op.create_index("ix_reference_res_key", "idx_reference", ["res_key"])

    op.create_table("idx_uri", *_common(), sa.Column("value", sa.String(1024), nullable=False))
    op.create_index("ix_uri_lookup", "idx_uri", ["resource_type", "param", "value", "res_key"])
    op.create_index("ix_uri_res_key", "idx_uri", ["res_key"])

    op.create_table(
        "idx_composite",
        *_common(),
        sa.Column("c1_system", sa.String(512), nullable=True),
        sa.Column("c1_value", sa.String(512), nullable=True),
        sa.Column("c2_system", sa.String(512), nullable=True),
        sa.Column("c2_value", sa.String(512), nullable=True),
        sa.Column("c2_number", sa.Float(53), nullable=True),
        sa.Column("c2_canon_value", sa.Float(53), nullable=True),
        sa.Column("c2_canon_code", sa.String(128), nullable=True),
        sa.Column("c2_lo", sa.BigInteger, nullable=True),
        sa.Column("c2_hi", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_composite_lookup", "idx_composite", ["resource_type", "param", "c1_value", "res_key"])
    op.create_index("ix_composite_res_key", "idx_composite", ["res_key"])

    op.create_table("search_state", sa.Column("id", sa.Integer, primary_key=True), sa.Column("generation", sa.Integer, nullable=False))
    op.execute("INSERT INTO search_state (id, generation) VALUES (1, 0)")


def downgrade() -> None:
    for name in ("search_state", "idx_composite", "idx_uri", "idx_reference", "idx_quantity", "idx_number", "idx_date", "idx_string", "idx_token_text"):
        op.drop_table(name)
    op.drop_index("ix_token_lookup", table_name="idx_token")
    op.create_index("ix_token_lookup", "idx_token", ["resource_type", "param", "value", "system"])
