"""Metrics: each device's latest snapshot and an hour of per-minute samples.

Revision ID: 0006_metrics
Revises: 0005_cluster
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from roost.hub.models import UTCDateTime

revision: str = "0006_metrics"
down_revision: str | None = "0005_cluster"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_metrics",
        sa.Column("device_id", sa.Integer(), sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("endpoint", sa.String(261), nullable=True),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("lines", sa.Text(), nullable=False),
    )
    op.create_table(
        "device_metric_samples",
        sa.Column("device_id", sa.Integer(), sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("minute", UTCDateTime(), primary_key=True),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("device_metric_samples")
    op.drop_table("device_metrics")
