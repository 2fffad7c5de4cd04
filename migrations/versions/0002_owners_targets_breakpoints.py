"""run owners, targets, breakpoints, children, BSS resources; audit values; room for longer state names

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:30:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = ('pending', 'stopping', 'releasing', 'deletable', 'deleting', 'deleted', 'skipped', 'blocked', 'failed',
          'timed_out')


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _audit_triggers(create: bool) -> None:
    """SQLite rebuilds a table to change a column type, and its triggers go with the old one: drop, rebuild, put
    back. (The rebuild copies rows with INSERT … SELECT and drops the old table: no UPDATE or DELETE fires.)"""
    if not _sqlite():
        return
    for verb in ("update", "delete"):
        if create:
            op.execute(f"CREATE TRIGGER audit_records_no_{verb} BEFORE {verb.upper()} ON audit_records "
                       "BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS audit_records_no_{verb}")


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('targets', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('owner', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('owner_pid', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('owner_host', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('owner_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('owner_heartbeat', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('owner_command', sa.Text(), nullable=True))

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('project_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('child_kind', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('gtid', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('incre_start_position', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('bss_resource_ids', sa.JSON(), nullable=True))
        # Stored as text: a new state name needs no migration, only the room for it.
        batch_op.alter_column('state', existing_type=sa.Enum(*STATES, name='taskstate', native_enum=False,
                                                             length=16),
                              type_=sa.String(length=32), existing_nullable=False)
        batch_op.create_index('ix_tasks_job_id', ['job_id'], unique=False)

    _audit_triggers(create=False)
    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('values', sa.Text(), nullable=True))
        batch_op.alter_column('from_state', existing_type=sa.String(length=16), type_=sa.String(length=32),
                              existing_nullable=True)
        batch_op.alter_column('to_state', existing_type=sa.String(length=16), type_=sa.String(length=32),
                              existing_nullable=True)
    _audit_triggers(create=True)


def downgrade() -> None:
    _audit_triggers(create=False)
    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.alter_column('to_state', existing_type=sa.String(length=32), type_=sa.String(length=16),
                              existing_nullable=True)
        batch_op.alter_column('from_state', existing_type=sa.String(length=32), type_=sa.String(length=16),
                              existing_nullable=True)
        batch_op.drop_column('values')
    _audit_triggers(create=True)

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_job_id')
        batch_op.alter_column('state', existing_type=sa.String(length=32),
                              type_=sa.Enum(*STATES, name='taskstate', native_enum=False, length=16),
                              existing_nullable=False)
        batch_op.drop_column('bss_resource_ids')
        batch_op.drop_column('incre_start_position')
        batch_op.drop_column('gtid')
        batch_op.drop_column('child_kind')
        batch_op.drop_column('project_id')
        batch_op.drop_column('target')

    # In place (SQLite ≥ 3.35 drops a plain column): rebuilding runs would trip the foreign keys onto it.
    with op.batch_alter_table('runs', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('owner_command')
        batch_op.drop_column('owner_heartbeat')
        batch_op.drop_column('owner_since')
        batch_op.drop_column('owner_pid')
        batch_op.drop_column('owner_host')
        batch_op.drop_column('owner')
        batch_op.drop_column('targets')
