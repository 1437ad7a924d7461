"""Edge clusters: nodes (agents' capacity and tier), service types, replicas and sessions.

Revision ID: 0005_cluster
Revises: 0004_deployment_update_policies
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from roost.hub.models import UTCDateTime

revision: str = "0005_cluster"
down_revision: str | None = "0004_deployment_update_policies"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_nodes",
        sa.Column("device_id", sa.Integer(), sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("address", sa.String(253), nullable=False),
        sa.Column("port_min", sa.Integer(), nullable=False),
        sa.Column("port_max", sa.Integer(), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("cpu_millis", sa.BigInteger(), nullable=False),
        sa.Column("accelerators", sa.JSON(), nullable=False),
        sa.Column("measured", sa.JSON(), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "cluster_service_types",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "cluster_replicas",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("service_type", sa.String(63), nullable=False),
        sa.Column("device_id", sa.Integer(), sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("component", sa.String(128), nullable=False),
        sa.Column("base_component", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("active_sessions", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("cpu_millis", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("ready_at", UTCDateTime(), nullable=True),
        sa.Column("idle_since", UTCDateTime(), nullable=True),
        sa.Column("reason", sa.String(2000), nullable=True),
    )
    op.create_index("ix_cluster_replicas_device", "cluster_replicas", ["device_id", "status"])
    op.create_index("ix_cluster_replicas_type", "cluster_replicas", ["service_type", "status"])
    op.create_table(
        "cluster_sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("service_type", sa.String(63), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("replica_id", sa.String(36), sa.ForeignKey("cluster_replicas.id", ondelete="SET NULL"),
                  nullable=True),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(400), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("legacy", sa.Boolean(), nullable=False),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("end_reason", sa.String(2000), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("last_activity_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_cluster_sessions_replica", "cluster_sessions", ["replica_id", "status"])
    op.create_index("ix_cluster_sessions_status", "cluster_sessions", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_cluster_sessions_status", "cluster_sessions")
    op.drop_index("ix_cluster_sessions_replica", "cluster_sessions")
    op.drop_table("cluster_sessions")
    op.drop_index("ix_cluster_replicas_type", "cluster_replicas")
    op.drop_index("ix_cluster_replicas_device", "cluster_replicas")
    op.drop_table("cluster_replicas")
    op.drop_table("cluster_service_types")
    op.drop_table("cluster_nodes")
