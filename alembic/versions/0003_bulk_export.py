"""Bulk Data export jobs and the res_keys a Group/Patient export covers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bulk_export_job",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("group_id", sa.String(64), nullable=True),
        sa.Column("request_url", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("transaction_time_us", sa.BigInteger, nullable=False),
        sa.Column("client_id", sa.String(256), nullable=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("finished_us", sa.BigInteger, nullable=True),
        sa.Column("expires_us", sa.BigInteger, nullable=True),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("lease_until_us", sa.BigInteger, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("checkpoint", sa.Text, nullable=True),
        sa.Column("manifest", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_bulk_export_job_status", "bulk_export_job", ["status", "lease_until_us"])
    op.create_table(
        "bulk_export_key",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("res_key", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("new_member", sa.Boolean, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # scratch rows, rebuilt from transactionTime when lost: no WAL (a job resuming after a
        # database crash finds the table empty and materialises its keys again)
        op.execute("ALTER TABLE bulk_export_key SET UNLOGGED")


def downgrade() -> None:
    op.drop_table("bulk_export_key")
    op.drop_index("ix_bulk_export_job_status", table_name="bulk_export_job")
    op.drop_table("bulk_export_job")
