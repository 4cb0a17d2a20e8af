"""Per-row lineage (issue 22): what made each row. The job records the model (its full
weights SHA-256, its registry entry and DP budget) and Sluice's version at submit; each chunk
the worker that made its rows (its version, the digest of the code that makes outputs, the
options that can change them); each row the keyed digest of its input.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("lineage", JSONType, nullable=True))
    op.add_column("chunks", sa.Column("made_by", JSONType, nullable=True))
    op.add_column("results", sa.Column("input_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("results", "input_digest")
    op.drop_column("chunks", "made_by")
    op.drop_column("jobs", "lineage")
