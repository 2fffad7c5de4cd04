"""runs lose deadline_at (nothing read it: each command's --timeout is its own budget, held by the engine);
consent gets room for the billing mark (typed-project-id+plan-file+unsubscribe-prepaid)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 16:30:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    # Both in place. SQLite (3.35+) drops a plain column without a rebuild; it does not enforce a VARCHAR's length,
    # and widening it there would rebuild `runs` under the tasks' foreign keys (env.py's type comparison knows).
    with op.batch_alter_table('runs', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('deadline_at')
    if _postgres():
        op.alter_column('runs', 'consent', existing_type=sa.String(length=32), type_=sa.String(length=64),
                        existing_nullable=False)


def downgrade() -> None:
    if _postgres():
        op.alter_column('runs', 'consent', existing_type=sa.String(length=64), type_=sa.String(length=32),
                        existing_nullable=False)
    with op.batch_alter_table('runs', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('deadline_at', sa.DateTime(timezone=True), nullable=True))
