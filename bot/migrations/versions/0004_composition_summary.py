"""compositions.summary: what the piece sounds like, as the composer measured it

The composer now sends a summary with every piece (notes, pace, register, loudness, key),
so the bot describes a piece without reading its MIDI. Rows from before keep NULL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (SQLite has had DROP COLUMN since 3.35): batch mode would
# rebuild the table, which other rows point at.
def upgrade() -> None:
    op.add_column("compositions", sa.Column("summary", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("compositions", "summary")
