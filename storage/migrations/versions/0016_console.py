"""The console (issue 23). A job's rate and ETA read the chunks that ended in the last minute
(storage/progress.py), found by (job_id, finished_at) without reading the job's other chunks;
`console_sessions` holds console sign-ins (storage/console_sessions.py): the SHA-256 of each
session cookie, its API key, its CSRF token and when it ends.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_chunks_job_finished", "chunks", ["job_id", "finished_at"])
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "key_id",
            sa.String(32),
            sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("console_sessions")
    op.drop_index("ix_chunks_job_finished", table_name="chunks")
