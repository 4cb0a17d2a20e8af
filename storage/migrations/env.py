"""Alembic environment: runs on the connection that storage.engine.migrate hands it."""

from alembic import context

from storage.tables import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
context.run_migrations()
