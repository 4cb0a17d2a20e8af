"""Front doors: tenants, API keys, callbacks, enrich watermarks, chunk timings.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild on SQLite: rebuilding `jobs` would cascade-delete).
    op.add_column(
        "jobs",
        sa.Column("tenant", sa.String(64), nullable=False, server_default=sa.text("'default'")),
    )
    op.add_column("jobs", sa.Column("api_key_id", sa.String(32), nullable=True))
    op.add_column("jobs", sa.Column("callback_url", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("parent_job_id", sa.String(32), nullable=True))
    op.add_column("jobs", sa.Column("idempotency_key", sa.String(128), nullable=True))
    op.create_index("ix_jobs_tenant", "jobs", ["tenant"])
    op.create_index(
        "uq_jobs_tenant_idempotency", "jobs", ["tenant", "idempotency_key"], unique=True
    )
    op.add_column("chunks", sa.Column("claimed_at", TS, nullable=True))
    op.add_column("chunks", sa.Column("finished_at", TS, nullable=True))
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])
    op.create_table(
        "callback_deliveries",
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("delivered_at", TS, nullable=True),
    )
    op.create_index(
        "ix_callback_deliveries_next_attempt_at", "callback_deliveries", ["next_attempt_at"]
    )
    op.create_table(
        "enrich_watermarks",
        sa.Column("source", sa.String(512), primary_key=True),
        sa.Column("table_name", sa.String(256), primary_key=True),
        sa.Column("task", sa.String(64), primary_key=True),
        sa.Column("model_version", sa.String(64), primary_key=True),
        sa.Column("since_column", sa.String(128), nullable=False),
        sa.Column("value", JSONType, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("enrich_watermarks", "callback_deliveries", "api_keys"):
        op.drop_table(table)
    op.drop_column("chunks", "finished_at")
    op.drop_column("chunks", "claimed_at")
    op.drop_index("uq_jobs_tenant_idempotency", "jobs")
    op.drop_index("ix_jobs_tenant", "jobs")
    for column in ("idempotency_key", "parent_job_id", "callback_url", "api_key_id", "tenant"):
        op.drop_column("jobs", column)
