"""`sluice cache`: the operator's view of the result cache (storage/result_cache.py)."""

import json
from typing import TYPE_CHECKING

import click

from schemas.settings import Settings

if TYPE_CHECKING:
    from storage.result_cache import ResultCache


def register_cache_commands(main: click.Group) -> None:
    """Add `sluice cache stats|clear` to `main` (a SluiceGroup: its subgroups are too)."""

    @main.group()
    def cache() -> None:
        """Stored results that re-runs take instead of running the model (per tenant; a job
        turns it off with --no-cache)."""

    @cache.command("stats")
    @click.option("--tenant", default=None, help="one tenant (default: every tenant)")
    def cache_stats(tenant: str | None) -> None:
        """How many results the cache holds."""
        click.echo(json.dumps({"tenant": tenant, "entries": _cache().count(tenant)}))

    @cache.command("clear")
    @click.option("--tenant", default=None, help="only this tenant's entries")
    @click.option("--job", "job_id", default=None, help="only the entries this job stored")
    @click.option("--all", "everything", is_flag=True, help="every tenant's entries")
    def cache_clear(tenant: str | None, job_id: str | None, everything: bool) -> None:
        """Remove stored results: a tenant's, a job's, or (--all) every one. Their jobs'
        results stay; the next run of the same rows runs the model again."""
        if not (tenant or job_id or everything):
            raise click.UsageError("say what to clear: --tenant NAME, --job ID or --all")
        removed = _cache().clear(tenant=tenant, job_id=job_id)
        click.echo(json.dumps({"tenant": tenant, "job_id": job_id, "removed": removed}))


def _cache() -> "ResultCache":
    from storage.engine import make_engine, prepare_schema
    from storage.result_cache import ResultCache

    engine = make_engine(Settings().resolved_database_url())
    prepare_schema(engine)
    return ResultCache(engine)
