"""archive web: index requests by requester handle (search by requester)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 17:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.create_index("ix_requests_requester_acct", ["requester_acct", "visibility"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_index("ix_requests_requester_acct")
