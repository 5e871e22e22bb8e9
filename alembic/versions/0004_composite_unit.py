"""Composite index rows keep the quantity's human unit (``c2_unit``).

``component-code-value-quantity=http://loinc.org|8480-6$116||mmHg`` must match a
component whose code is ``mm[Hg]`` and whose unit is ``mmHg``: with an empty system the
quantity's code *or* its unit matches (https://hl7.org/fhir/R4/search.html#quantity).
Plain quantity rows kept the unit from the start; composite rows did not. Rows written
before this revision have no unit until ``trialfhir reindex``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("idx_composite", sa.Column("c2_unit", sa.String(512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idx_composite") as batch:
        batch.drop_column("c2_unit")
