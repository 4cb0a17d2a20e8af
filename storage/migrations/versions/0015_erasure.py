"""Erasure and retention (issue 22): when a job's data expires (`jobs.expires_at`), the
exports Sluice stored itself (`exports`: where, and the stamp it was written with), and the
audit of every erasure (`erasure_audit`: what went, never a key: its keyed digest).

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("retention_s", sa.BigInteger, nullable=True))
    op.create_index("ix_jobs_expires_at", "jobs", ["expires_at"])
    op.create_table(
        "exports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("stamp", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "erasure_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("key_digest", sa.String(64), nullable=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("exports", sa.Integer, nullable=False),
        sa.Column("by", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("erasure_audit")
    op.drop_table("exports")
    op.drop_index("ix_jobs_expires_at", "jobs")
    op.drop_column("jobs", "retention_s")
    op.drop_column("jobs", "expires_at")
