"""Tenant-scoped registry and key roles: model names belong to a tenant (primary key tenant,
name, version), models can be shared with other tenants, and a key is a tenant's or an
operator's.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
KEY = ["tenant", "name", "version"]


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column("role", sa.String(16), nullable=False, server_default=sa.text("'tenant'")),
    )
    op.create_table(
        "model_shares",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("grantee", sa.String(64), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_model_shares_grantee", "model_shares", ["grantee"])
    _primary_key(KEY)


def downgrade() -> None:
    _primary_key(["name", "version"])
    op.drop_index("ix_model_shares_grantee", "model_shares")
    op.drop_table("model_shares")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("role")


def _primary_key(columns: list[str]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("model_versions_pkey", "model_versions", type_="primary")
        op.create_primary_key("model_versions_pkey", "model_versions", columns)
        return
    # SQLite cannot alter a primary key: a new table, the rows copied, then renamed.
    op.create_table(
        "model_versions_new",
        sa.Column("tenant", sa.String(64), nullable=False, server_default=sa.text("'default'")),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("training_run_id", sa.String(32), nullable=True, unique=True),
        sa.Column("data_fingerprint", sa.String(64), nullable=True),
        sa.Column("dp", sa.JSON(), nullable=True),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint(*columns, name="model_versions_pkey"),
    )
    names = (
        "tenant, name, version, task, uri, sha256, metrics, training_run_id, "
        "data_fingerprint, dp, stage, created_at, updated_at"
    )
    op.execute(f"INSERT INTO model_versions_new ({names}) SELECT {names} FROM model_versions")
    op.drop_table("model_versions")
    op.rename_table("model_versions_new", "model_versions")
