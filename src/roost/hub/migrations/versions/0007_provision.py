"""Devices registered over SSH: registrations with their steps, pinned host keys.

Revision ID: 0007_provision
Revises: 0006_metrics
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from roost.hub.models import UTCDateTime

revision: str = "0007_provision"
down_revision: str | None = "0006_metrics"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provision_registrations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("device_name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("become", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("host_key_fingerprint", sa.String(128), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("message", sa.String(4000), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_provision_registrations_device", "provision_registrations", ["device_name", "created_at"])
    op.create_table(
        "ssh_host_keys",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("port", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(16384), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("pinned_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ssh_host_keys")
    op.drop_index("ix_provision_registrations_device", table_name="provision_registrations")
    op.drop_table("provision_registrations")
