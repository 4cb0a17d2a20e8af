"""PII redaction (issue 21): what each row's redaction found (field, type, span, by what),
never the values.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("results", sa.Column("redactions", JSONType, nullable=True))


def downgrade() -> None:
    op.drop_column("results", "redactions")
