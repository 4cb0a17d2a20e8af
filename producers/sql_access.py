"""Which configured SQL source and table a caller may read (SLUICE_API_SQL_SOURCES, narrowed
per tenant by SLUICE_TENANT_GRANTS). One message for every refusal: a tenant learns neither
which other sources exist nor which tables they hold."""

from schemas.errors import SluiceError
from schemas.settings import Settings


def sql_source_url(settings: Settings, tenant: str | None, name: str, table: str) -> str:
    """The URL of source `name`, if `tenant` may read its `table`."""
    sources = settings.api_sql_sources
    grant = settings.grant_for(tenant)
    if grant is None:  # the operator's own tenant
        if name not in sources:
            known = ", ".join(sorted(sources)) or "none configured"
            raise SluiceError(f"unknown SQL source {name!r} (SLUICE_API_SQL_SOURCES: {known})")
        return sources[name]
    if name in sources and grant.may_read_table(name, table):
        return sources[name]
    mine = sorted(
        f"{source}: {', '.join(tables)}"
        for source, tables in grant.sql_sources.items()
        if source in sources
    )
    raise SluiceError(
        f"no table {table!r} in a SQL source {name!r} open to you; yours: "
        + ("; ".join(mine) or "none (an operator grants them in SLUICE_TENANT_GRANTS)")
    )
