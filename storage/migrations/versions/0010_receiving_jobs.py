"""A million rows, flat memory (issue 16): large jobs are written in batches while
`receiving`, their item keys kept unique by the primary key of `job_keys`; indexes for a
results page deep in a job (job_id, seq) and a tenant's newest jobs (tenant, created_at).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_keys",
        sa.Column("job_id", sa.String(32), nullable=False),  # no foreign key: see tables
        sa.Column("item_key", sa.String(512), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "item_key"),
    )
    op.create_index("ix_results_job_seq", "results", ["job_id", "seq"])
    op.create_index("ix_jobs_tenant_created", "jobs", ["tenant", "created_at"])
    op.create_index("ix_jobs_created", "jobs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_created", table_name="jobs")
    op.drop_index("ix_jobs_tenant_created", table_name="jobs")
    op.drop_index("ix_results_job_seq", table_name="results")
    op.drop_table("job_keys")
