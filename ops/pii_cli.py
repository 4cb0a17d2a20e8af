"""`sluice pii`: the PII types redaction acts on, and a hashed key for joining results back."""

import json
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy import Engine


def register_pii_commands(main: click.Group) -> None:
    """Add `sluice pii types|key|forget-secret` to `main`."""

    @main.group()
    def pii() -> None:
        """PII redaction (`--redact detect|mask|hash` on submit and enrich)."""

    @pii.command("types")
    def pii_types() -> None:
        """The types redaction acts on, and what finds each."""
        from schemas.redaction import MODEL_TYPES
        from schemas.settings import Settings
        from storage import pii as patterns

        model = Settings().pii_model
        rows = [{"type": t, "found_by": "pattern", "checksum": t in patterns.CHECKSUM_TYPES}
                for t in patterns.PATTERN_TYPES]  # fmt: skip
        rows += [{"type": t, "found_by": f"entity model ({model or 'SLUICE_PII_MODEL unset'})"}
                 for t in MODEL_TYPES]  # fmt: skip
        for row in rows:
            click.echo(json.dumps(row))

    @pii.command("forget-secret")
    @click.option("--tenant", required=True)
    @click.confirmation_option(prompt="Every hash token of this tenant becomes unmatchable. Go on?")
    def pii_forget_secret(tenant: str) -> None:
        """Destroy TENANT's secret (and its result cache, keyed with it): no `hash` token or
        hashed key made before can be matched to a value again; new jobs get a new secret."""
        from storage.result_cache import ResultCache

        ResultCache(_engine()).forget_secret(tenant)
        click.echo(json.dumps({"tenant": tenant, "secret": "destroyed"}))

    @pii.command("key")
    @click.argument("keys", nargs=-1, required=True)
    @click.option("--tenant", default="default", show_default=True)
    def pii_key(keys: tuple[str, ...], tenant: str) -> None:
        """What KEYS are stored as by a job of TENANT under --redact mask or hash (a key
        holding PII is hashed with the tenant's secret): join results back by it."""
        from producers.redacting import stored_key

        engine = _engine()
        for key in keys:
            click.echo(json.dumps({"key": key, "stored_as": stored_key(engine, key, tenant)}))


def _engine() -> "Engine":
    """The ledger's engine, its schema current (no broker needed)."""
    from schemas.settings import Settings
    from schemas.stack import endpoints
    from storage.engine import make_engine, prepare_schema

    engine = make_engine(endpoints(Settings()).database_url)
    prepare_schema(engine)
    return engine
