"""Deadlines and the OpenAI-compatible Batch API (issue 25). `jobs.deadline_at`: past it, the
sweeper ends a job's unfinished rows `expired` (storage/ledger.py, Ledger.expire).
`openai_files` and `openai_file_parts`: files uploaded for batches, their bytes in parts of at
most 1 MiB (or an object, `uri`). `openai_batches`: each batch and the job running it.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_deadline_at", "jobs", ["deadline_at"])
    op.create_table(
        "openai_files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False, index=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True, index=True),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_table(
        "openai_file_parts",
        sa.Column(
            "file_id",
            sa.String(40),
            sa.ForeignKey("openai_files.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "openai_batches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False, index=True),
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("input_file_id", sa.String(40), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("batch_metadata", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=True),
        sa.Column("failed", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("openai_batches")
    op.drop_table("openai_file_parts")
    op.drop_table("openai_files")
    op.drop_index("ix_jobs_deadline_at", "jobs")
    op.drop_column("jobs", "deadline_at")
