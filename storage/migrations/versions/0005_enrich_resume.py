"""`sluice enrich` that can be re-run: the run in progress (resumed after a kill) and the
keys whose rows ended `error` (retried by the next incremental runs).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "enrich_runs",
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("table_name", sa.String(256), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("watermark_before", JSONType, nullable=True),
        sa.Column("watermark_after", JSONType, nullable=True),
        sa.Column("rows_read", sa.Integer(), nullable=False),
        sa.Column("rows_retried", sa.Integer(), nullable=False),
        sa.Column("results_done", sa.Integer(), nullable=False),
        sa.Column("rows_written", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "enrich_retries",
        sa.Column("source", sa.String(512), primary_key=True),
        sa.Column("table_name", sa.String(256), primary_key=True),
        sa.Column("task", sa.String(64), primary_key=True),
        sa.Column("model_version", sa.String(64), primary_key=True),
        sa.Column("item_key", sa.String(512), primary_key=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("enrich_retries")
    op.drop_table("enrich_runs")
