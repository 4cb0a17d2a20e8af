"""Event pipelines on message buses (issue 24, storage/standing_jobs.py). `jobs.standing`: a
pipeline's job, open for more events, which does not end while it is (its chunks may all be
done between two events). `pipeline_jobs`: each pipeline's open job. `pipeline_inbox`: every
event a pipeline recorded, by its key, so that a redelivered message is recognised and never
processed twice, and when its result was published.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("standing", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "pipeline_jobs",
        sa.Column("pipeline", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dead_lettered", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "pipeline_inbox",
        sa.Column("pipeline", sa.String(64), primary_key=True),
        sa.Column("event_key", sa.String(512), primary_key=True),
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_pipeline_inbox_unpublished", "pipeline_inbox", ["pipeline", "published_at"])


def downgrade() -> None:
    op.drop_table("pipeline_inbox")
    op.drop_table("pipeline_jobs")
    op.drop_column("jobs", "standing")
