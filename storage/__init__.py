"""The ledger: SQLAlchemy tables, engine set-up, migrations, ledger operations and exporters."""
