"""archive web: composite indexes for the genre and model-version filters with keyset paging

The list pages filter by genre or model version and page newest first on (created_at, id):
an index on (filter column, created_at, id) hands out one page in order, without sorting
the filtered rows. (genre, created_at, id) replaces 0001's (genre, created_at), its prefix.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 19:05:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("compositions", schema=None) as batch_op:
        batch_op.create_index("ix_compositions_genre_created_id", ["genre", "created_at", "id"], unique=False)
        batch_op.create_index("ix_compositions_version_created_id", ["model_version", "created_at", "id"], unique=False)
        batch_op.drop_index("ix_compositions_genre_created")


def downgrade() -> None:
    with op.batch_alter_table("compositions", schema=None) as batch_op:
        batch_op.create_index("ix_compositions_genre_created", ["genre", "created_at"], unique=False)
        batch_op.drop_index("ix_compositions_version_created_id")
        batch_op.drop_index("ix_compositions_genre_created_id")
