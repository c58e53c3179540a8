"""The key and pace asked for (issue #14): requests.key/density, compositions.asked_key/asked_density/key_followed

A mention may name a key ("in D minor") and a pace ("busy": notes per second). The request
keeps what its mention asked; the piece keeps what the composer was asked (a "more" keeps
its source's unless it asks for others) and whether the model followed it (a model trained
without controls composes anyway). Rows from before keep NULL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (SQLite has had DROP COLUMN since 3.35): batch mode would
# rebuild the tables, which other rows point at.
def upgrade() -> None:
    op.add_column("requests", sa.Column("key", sa.String(length=32), nullable=True))
    op.add_column("requests", sa.Column("density", sa.Float(), nullable=True))
    op.add_column("compositions", sa.Column("asked_key", sa.String(length=32), nullable=True))
    op.add_column("compositions", sa.Column("asked_density", sa.Float(), nullable=True))
    op.add_column("compositions", sa.Column("key_followed", sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_column("compositions", "key_followed")
    op.drop_column("compositions", "asked_density")
    op.drop_column("compositions", "asked_key")
    op.drop_column("requests", "density")
    op.drop_column("requests", "key")
