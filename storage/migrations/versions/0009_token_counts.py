"""Token counts (issue 14): each job's prompt and completion tokens, summed from its rows'
outputs as chunks settle (tasks that count tokens: `generate`).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # null: the job's task counts no tokens (and jobs recorded before counting existed)
    op.add_column("jobs", sa.Column("prompt_tokens", sa.BigInteger(), nullable=True))
    op.add_column("jobs", sa.Column("completion_tokens", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # not batch mode: copying `jobs` and dropping the old one would cascade
    op.drop_column("jobs", "completion_tokens")
    op.drop_column("jobs", "prompt_tokens")
