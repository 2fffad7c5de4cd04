"""workers record the run they serve (fair sharing of a run on PostgreSQL)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain nullable column: SQLite adds it in place, no table rebuild.
    with op.batch_alter_table('workers', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('run_id', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('run_id')
