"""The seconds each stage of a reply took (issue #18): requests.stage_seconds

A JSON object per request: notice (mention to stored), parse, compose, render, upload,
media (the server processing the upload) and post, each set as the stage ends; rows from
before keep NULL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("requests", sa.Column("stage_seconds", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("requests", "stage_seconds")
