"""Explanations carry a modality-specific detail (image grid, audio segments, record values).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("explanations") as batch:
        batch.add_column(sa.Column("detail", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("explanations") as batch:
        batch.drop_column("detail")
