"""The result cache (issue 16): a tenant's stored results under keyed digests, the tenant's
secret for those digests, and which rows (and how many of a job's) came from the cache.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "result_cache",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("output", JSONType, nullable=False),
        sa.Column("explanation", JSONType, nullable=True),
        sa.Column("explain_policy", sa.String(64), nullable=False),
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "digest"),
    )
    op.create_index("ix_result_cache_job_id", "result_cache", ["job_id"])
    op.create_table(
        "tenant_secrets",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )
    op.add_column(
        "jobs", sa.Column("cached", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )
    op.add_column(
        "results", sa.Column("cached", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    # not batch mode: copying `jobs` and dropping the old one would cascade
    op.drop_column("results", "cached")
    op.drop_column("jobs", "cached")
    op.drop_table("tenant_secrets")
    op.drop_index("ix_result_cache_job_id", table_name="result_cache")
    op.drop_table("result_cache")
