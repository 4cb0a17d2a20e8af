"""Misconfiguration fails at start (issue 20): the ledger's cluster id, which the broker is
told, and the Ray cluster the workers run models on (storage/cluster_identity.py). One row,
made on first use.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_identity",
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ray_id", sa.Text(), nullable=True),
        sa.Column("ray_address", sa.Text(), nullable=True),
        sa.Column("ray_bound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ray_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("slot"),
        sa.CheckConstraint("slot = 1", name="ck_cluster_identity_one_row"),
    )


def downgrade() -> None:
    op.drop_table("cluster_identity")
