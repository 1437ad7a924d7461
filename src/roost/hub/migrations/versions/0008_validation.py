"""Model versions' validation reports, the deployment gate's decisions, benchmarks per device class.

Revision ID: 0008_validation
Revises: 0007_provision
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from roost.hub.models import UTCDateTime

revision: str = "0008_validation"
down_revision: str | None = "0007_provision"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "component_validations",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["name", "version"], ["components.name", "components.version"], ondelete="CASCADE"),
    )
    op.create_table(
        "model_benchmarks",
        sa.Column("device_class", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.Integer(), sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("latency_us", sa.Float(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("engine", sa.String(64), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("gate", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("gate")
    op.drop_table("model_benchmarks")
    op.drop_table("component_validations")
