"""Training runs and the model registry.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "training_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False, server_default=sa.text("'default'")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", JSONType, nullable=False),
        sa.Column("progress", JSONType, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.Column("enqueued_at", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index("ix_training_runs_name", "training_runs", ["name"])
    op.create_index("ix_training_runs_status", "training_runs", ["status"])
    op.create_table(
        "model_versions",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False, server_default=sa.text("'default'")),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("metrics", JSONType, nullable=False),
        sa.Column("training_run_id", sa.String(32), nullable=True, unique=True),
        sa.Column("data_fingerprint", sa.String(64), nullable=True),
        sa.Column("dp", JSONType, nullable=True),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_versions")
    op.drop_index("ix_training_runs_status", "training_runs")
    op.drop_index("ix_training_runs_name", "training_runs")
    op.drop_table("training_runs")
