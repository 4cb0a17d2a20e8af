"""Fair share (issue 12): the lane of its modality queue a job's chunks are sent to, and each
tenant's usage per day and task.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Jobs recorded before lanes existed are on lane 0: the queue they were sent to.
    op.add_column(
        "jobs", sa.Column("lane", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )
    op.create_table(
        "tenant_usage",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("task", sa.String(64), primary_key=True),
        sa.Column("ok", sa.BigInteger(), nullable=False),
        sa.Column("invalid", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.BigInteger(), nullable=False),
        sa.Column("model_seconds", sa.Float(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("tenant_usage")
    # Not batch mode: copying `jobs` and dropping the old one would cascade (SQLite >= 3.35
    # drops a column in place).
    op.drop_column("jobs", "lane")
