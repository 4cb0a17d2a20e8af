"""The sweeper looks for queued chunks sent long ago (`state = 'queued' AND enqueued_at < t`)
every sweep: an index, so a table of finished jobs is not read each time.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_chunks_state_enqueued", "chunks", ["state", "enqueued_at"])


def downgrade() -> None:
    op.drop_index("ix_chunks_state_enqueued", table_name="chunks")
