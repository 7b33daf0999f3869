"""The anonymous allowance in the database (shared by every replica): counts per day and keyed hash, holds.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "allowance_usage",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("images", sa.Integer, nullable=False),
    )
    op.create_table(
        "allowance_holds",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("session_key", sa.String(64), nullable=False),
        sa.Column("address_key", sa.String(64), nullable=True),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("settled", sa.Boolean, nullable=False),
    )
    op.create_index("ix_allowance_holds_day", "allowance_holds", ["day"])


def downgrade() -> None:
    op.drop_index("ix_allowance_holds_day", "allowance_holds")
    op.drop_table("allowance_holds")
    op.drop_table("allowance_usage")
