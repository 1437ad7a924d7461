"""Deployments carry Greengrass' component update and configuration validation policies.

Revision ID: 0004_deployment_update_policies
Revises: 0003_secrets
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_deployment_update_policies"
down_revision: str | None = "0003_secrets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing deployments get Greengrass' defaults of cloud deployments.
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("update_policy_action", sa.String(32), nullable=False,
                                   server_default="NOTIFY_COMPONENTS"))
        batch.add_column(sa.Column("update_timeout_seconds", sa.Integer(), nullable=False, server_default="60"))
        batch.add_column(sa.Column("validation_timeout_seconds", sa.Integer(), nullable=False, server_default="30"))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("validation_timeout_seconds")
        batch.drop_column("update_timeout_seconds")
        batch.drop_column("update_policy_action")
