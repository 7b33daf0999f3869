"""Server-side sign-in sessions, closed-account hashes and the installation's secrets.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sign_in_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_sign_in_sessions_subject", "sign_in_sessions", ["subject"])
    op.create_table(
        "closed_accounts",
        sa.Column("subject", sa.String(64), primary_key=True),
        sa.Column("forget_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "instance_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("instance_secrets")
    op.drop_table("closed_accounts")
    op.drop_index("ix_sign_in_sessions_subject", table_name="sign_in_sessions")
    op.drop_table("sign_in_sessions")
