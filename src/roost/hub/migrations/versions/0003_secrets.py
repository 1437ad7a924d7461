"""Secrets the hub deploys to devices (aws.greengrass.SecretManager's cloudSecrets), sealed at rest.

Revision ID: 0003_secrets
Revises: 0002_deployment_dependencies
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from roost.hub.models import UTCDateTime

revision: str = "0003_secrets"
down_revision: str | None = "0002_deployment_dependencies"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "secret_versions",
        sa.Column("name", sa.String(2048), primary_key=True),
        sa.Column("version_id", sa.String(36), primary_key=True),
        sa.Column("stages", sa.JSON(), nullable=False),
        sa.Column("binary", sa.Boolean(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("secret_versions")
