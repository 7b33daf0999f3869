"""The first schema: accounts, ledger, images, generation history, usage and announcements.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_user_id", sa.String(255), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updates_opt_in", sa.Boolean, nullable=False),
        sa.Column("balance", sa.Integer, nullable=False),
        sa.UniqueConstraint("username", name="uq_accounts_username"),
        sa.UniqueConstraint("provider", "provider_user_id", name="uq_accounts_provider_user"),
        sa.CheckConstraint("balance >= 0", name="ck_accounts_balance_not_negative"),
    )
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "account_id", sa.String(32), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("delta", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("balance_after", sa.Integer, nullable=False),
        sa.UniqueConstraint("account_id", "request_id", "kind", name="uq_ledger_request_kind"),
    )
    op.create_index("ix_ledger_account", "ledger", ["account_id", "id"])
    op.create_table(
        "images",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner_kind", sa.String(16), nullable=False),
        sa.Column("owner_key", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_images_owner", "images", ["owner_kind", "owner_key", "created_at"])
    op.create_index("ix_images_expires", "images", ["expires_at"])
    op.create_table(
        "generations",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column(
            "account_id", sa.String(32), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("charged", sa.Integer, nullable=False),
    )
    op.create_index("ix_generations_account", "generations", ["account_id", "created_at"])
    op.create_table(
        "usage",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("hour", sa.DateTime, nullable=False),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("aspect_ratio", sa.String(16), nullable=False),
        sa.Column("steps", sa.Integer, nullable=True),
        sa.Column("num_images", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("timings", sa.JSON, nullable=False),
        sa.Column("total_seconds", sa.Float, nullable=False),
        sa.Column("generation_seconds", sa.Float, nullable=True),
    )
    op.create_index("ix_usage_hour", "usage", ["hour"])
    op.create_table(
        "announcements",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("emailed", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    for table in ("announcements", "usage", "generations", "images", "ledger", "accounts"):
        op.drop_table(table)
