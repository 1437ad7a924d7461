"""Federated learning jobs.

Revision ID: 0009_learn
Revises: 0008_validation
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from roost.hub.models import UTCDateTime

revision: str = "0009_learn"
down_revision: str | None = "0008_validation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "learn_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(134), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("devices", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("learn_jobs")
