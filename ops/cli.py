"""The `sluice` command line."""

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from ops.cache_cli import register_cache_commands
from ops.listen_cli import register_listen_command
from ops.pii_cli import register_pii_commands
from ops.task_options import param_values, with_param_options
from ops.train_cli import register_training_commands
from schemas.catalog import Catalog, load_catalog, unknown_task_message
from schemas.errors import SluiceError
from schemas.explainer_settings import MAX_EXPLAIN_STEPS, MIN_EXPLAIN_STEPS
from schemas.object_refs import is_object_uri
from schemas.settings import Settings
from schemas.training import RUN_PREFIX


class SluiceGroup(click.Group):
    """The `sluice` command and its subgroups: a SluiceError from any command (or a parameter
    it converts) ends the command with its message on stderr and exit status 2, no traceback.
    Other exceptions are bugs and keep their traceback."""

    group_class = type  # `@main.group()` makes SluiceGroups too

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SluiceError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


def _catalog() -> Catalog:
    """The tasks this command knows (built-in, entry points, SLUICE_TASK_MODULES): its
    options are derived from them, so they are read as the command line is built."""
    try:
        return load_catalog(Settings().task_modules)
    except (SluiceError, ValidationError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


CATALOG = _catalog()
REDACT_HELP = (
    "PII before anything is stored: none (the default; detect when --redact-types is "
    "given), detect (each row records what was found), mask (values become <EMAIL>, "
    "<PERSON>) or hash (a keyed token per value)"
)
REDACT_TYPES_HELP = (
    "comma-separated PII types to act on (default: all): EMAIL, PHONE, CREDIT_CARD, IBAN, "
    "IP_ADDRESS, national IDs, CN_MOBILE, CN_RESIDENT_ID; PERSON, PLACE, ORG need "
    "SLUICE_PII_MODEL (`sluice pii types` lists them)"
)
EXPLAIN_STEPS_HELP = (
    "the explainer's steps for this job (Integrated Gradients' integration steps; recorded "
    "on the job and on every row's lineage); default SLUICE_EXPLAIN_STEPS, else the catalog's"
)
RETENTION_HELP = (
    "how long the job's data is kept after it ends (30d, 12h, 2w); at most the tenant's "
    "limit, which is the default (SLUICE_RETENTION_DAYS); unset: until purged"
)
DEADLINE_HELP = (
    "end the job this long after submit (90m, 12h, 2d): rows not finished by then end "
    "`error` with the reason `expired`, finished ones are kept, the job ends `expired`"
)
REDACT_MODES = click.Choice(["none", "detect", "mask", "hash"])
NO_CACHE_HELP = (
    "run the model for every row, even those this tenant's result cache holds "
    "(by default a row seen before with the same model, parameters and explanation "
    "settings is taken from the cache, marked `cached`)"
)


class TaskName(click.ParamType):
    """A task of the catalog; an unknown one gets the catalog's own message."""

    name = "task"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        if value not in CATALOG:
            self.fail(unknown_task_message(str(value), CATALOG.names()), param, ctx)
        return str(value)

    def get_metavar(self, param: Any, ctx: Any = None) -> str:
        return "[" + "|".join(CATALOG.names()) + "]"


@click.group(cls=SluiceGroup)
def main() -> None:
    """Sluice: asynchronous batch AI processing."""


@main.command()
@click.option(
    "--only",
    default="documents,images,audio,records,generation,entities",
    show_default=True,
    help="which modalities to run",
)
@click.option(
    "--explain",
    default="low-confidence:0.7",
    show_default=True,
    help="explanation policy for the documents (the others explain every item)",
)
def demo(only: str, explain: str) -> None:
    """Start the embedded stack, run documents, images, audio, records, a generation job and
    an entities job through it at once, show a summary with one explained result of each,
    write HTML reports, stop."""
    from ops.demo import MODALITIES, run_demo

    chosen = tuple(m.strip() for m in only.split(",") if m.strip())
    unknown = sorted(set(chosen) - set(MODALITIES))
    if unknown or not chosen:
        raise SluiceError(f"--only takes some of {', '.join(MODALITIES)}; got {only!r}")
    sys.exit(run_demo(Settings(), chosen, explain))


@main.group()
def stack() -> None:
    """Start or stop the embedded stack (Redis, Ray, a Celery worker) in the background."""


@stack.command("up")
@click.option("--no-worker", is_flag=True, help="start Redis and Ray only")
@click.option(
    "--listen",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="also run `sluice listen` on this pipelines file (event pipelines on message buses)",
)
def stack_up(no_worker: bool, listen: Path | None) -> None:
    from ops import stack as st

    if listen is not None and no_worker:
        raise click.UsageError("--listen runs beside the worker: drop --no-worker")
    info = st.up(Settings(), worker=not no_worker, listen=listen)
    click.echo(
        json.dumps(
            {"broker_url": info.broker_url, "ray_address": info.ray_address, "pids": info.pids}
        )
    )


@stack.command("down")
def stack_down() -> None:
    from ops import stack as st

    click.echo("stopped" if st.down(Settings()) else "no embedded stack is running")


@main.command()
@click.option("--beat", is_flag=True, help="also run the periodic sweeper (one worker only)")
@click.option("--concurrency", "-c", type=int, default=None)
@click.option(
    "--queues",
    "-Q",
    default=None,
    help="only these queues, a,b (e.g. sluice.train for a training host; a modality queue "
    "comes with all its SLUICE_FAIR_LANES lanes); default all",
)
def worker(beat: bool, concurrency: int | None, queues: str | None) -> None:
    """Run a Celery worker against the configured services (the production shape)."""
    from ops.worker import run_worker

    run_worker(
        Settings(),
        beat=beat,
        concurrency=concurrency,
        queues=[q.strip() for q in queues.split(",") if q.strip()] if queues else None,
    )


@main.command()
@click.argument("file")
@click.option("--task", required=True, type=TaskName())
@click.option("--model", default=None, help="model directory or hub id (default: MiniLM)")
@click.option(
    "--explain", default="none", help="none | all | sample:RATE | low-confidence:THRESHOLD"
)
@click.option(
    "--explain-steps",
    default=None,
    type=click.IntRange(MIN_EXPLAIN_STEPS, MAX_EXPLAIN_STEPS),
    help=EXPLAIN_STEPS_HELP,
)
@with_param_options(CATALOG)
@click.option("--text-column", default="text", show_default=True)
@click.option(
    "--media-column",
    default="path",
    show_default=True,
    help="images/audio list file: the column of paths, file:// or data: URIs",
)
@click.option("--key-column", default=None, help="unique key per row (default: row number)")
@click.option(
    "--priority", default=5, type=click.IntRange(0, 9), show_default=True, help="0..9, higher first"
)
@click.option("--no-cache", is_flag=True, help=NO_CACHE_HELP)
@click.option("--retention", default=None, help=RETENTION_HELP)
@click.option("--deadline", default=None, help=DEADLINE_HELP)
@click.option("--redact", default=None, type=REDACT_MODES, help=REDACT_HELP)
@click.option("--redact-types", default=None, help=REDACT_TYPES_HELP)
@click.option("--wait", is_flag=True, help="show progress until the job ends")
@click.option("--json", "as_json", is_flag=True, help="end with one JSON line")
def submit(
    file: str,
    task: str,
    model: str | None,
    explain: str,
    explain_steps: int | None,
    text_column: str,
    media_column: str,
    key_column: str | None,
    priority: int,
    no_cache: bool,
    retention: str | None,
    deadline: str | None,
    redact: str | None,
    redact_types: str | None,
    wait: bool,
    as_json: bool,
    **task_params: Any,
) -> None:
    """Submit FILE as one job: a JSONL, CSV or Parquet file of texts, records or media
    references, or a folder of images or audio files; either may be an object-store
    location (s3://bucket/list.jsonl, s3://bucket/photos/). The options in [brackets] are task
    parameters, taken by the tasks listed."""
    from ops.progress import wait_with_bar
    from producers import Client

    client = Client()
    job_id = client.submit_file(
        file,
        task,
        text_column=text_column,
        media_column=media_column,
        key_column=key_column,
        model=model,
        explain=explain,
        explain_steps=explain_steps,
        priority=priority,
        cache=not no_cache,
        retention=retention,
        deadline=deadline,
        redact=redact,
        redact_types=redact_types,
        **param_values(CATALOG, task_params),
    )
    view = wait_with_bar(client, job_id) if wait else client.status(job_id)
    click.echo(json.dumps(view.as_dict()) if as_json else job_id)
    if wait and view.status != "succeeded":
        sys.exit(1)


@main.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """A job's (or a training run's) status, counts or progress, as JSON."""
    from producers import Client

    if job_id.startswith(RUN_PREFIX):
        from ops.train_cli import run_as_dict

        click.echo(json.dumps(run_as_dict(Client().training_run(job_id)), indent=2))
        return
    click.echo(json.dumps(Client().status(job_id).as_dict(), indent=2))


@main.command()
@click.argument("job_id")
@click.option(
    "--format", "fmt", default="jsonl", type=click.Choice(["jsonl", "csv", "parquet", "html"])
)
@click.option("-o", "--output", default=None, help="a file or an object (s3://bucket/out.jsonl)")
@click.option("--limit", default=500, show_default=True, help="html: items shown")
def results(job_id: str, fmt: str, output: str | None, limit: int) -> None:
    """Export a job's results (stdout unless -o FILE or -o s3://...). `html` renders the
    explanations:
    heatmaps over images, attributions over words, audio segments and record features."""
    from producers import Client

    client = Client()
    if fmt == "html":
        from ops.report import write_html

        if output is None or is_object_uri(output):
            raise SluiceError("the html report needs a local file: pass -o report.html")
        n = write_html(client, job_id, Path(output), limit)
    else:
        n = client.export(job_id, fmt, output if output else sys.stdout)
    if output:
        click.echo(f"wrote {n} rows to {output}", err=True)


@main.command()
@click.argument("job_id")
@click.argument("key")
def lineage(job_id: str, key: str) -> None:
    """What made row KEY of JOB_ID, as JSON: its input's keyed digest, the model with its
    version, weights' SHA-256, registry entry and DP budget, Sluice's version, the worker's
    code digest, the explainer and its steps, and the redaction applied."""
    from producers import Client

    click.echo(json.dumps(Client().lineage(job_id, key), indent=2))


@main.command()
@click.argument("job_id", required=False)
@click.option("--older-than", default=None, help="every finished job created before: 30d, 12h")
@click.option("--tenant", default=None, help="with --older-than: only this tenant's jobs")
@click.option("--yes", is_flag=True, help="with --older-than: do not ask")
def purge(job_id: str | None, older_than: str | None, tenant: str | None, yes: bool) -> None:
    """Remove a finished job and everything of it (items, results, explanations, callbacks,
    cache entries, exports Sluice stored), or every finished job older than --older-than.
    Recorded in the erasure audit. A running job is refused: cancel it first."""
    from producers import Client

    if (job_id is None) == (older_than is None):
        raise click.UsageError("give a JOB_ID or --older-than, not both")
    client = Client()
    if job_id is not None:
        erased = client.purge(job_id, by="cli")
    else:
        assert older_than is not None
        if not yes:
            click.confirm(
                f"purge every finished job created more than {older_than} ago?", abort=True
            )
        erased = client.purge_older_than(older_than, tenant, by="cli")
    click.echo(json.dumps(erased.as_dict(), indent=2))


@main.command()
@click.option("--key", "key", required=True, help="the row key to forget, as the source has it")
@click.option("--tenant", default=None, help="whose jobs (default: the operator's)")
def forget(key: str, tenant: str | None) -> None:
    """Remove every row with this key from a tenant's finished jobs ("forget this
    customer"): results, explanations, items, and those jobs' cache entries and stored
    exports. The erasure audit keeps the key's keyed digest, never the key."""
    from producers import Client

    click.echo(json.dumps(Client().forget(key, tenant, by="cli").as_dict(), indent=2))


@main.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a job (unfinished chunks are dropped, finished results stay) or a training run
    (it stops after its current epoch)."""
    from producers import Client

    if job_id.startswith(RUN_PREFIX):
        from ops.train_cli import run_as_dict

        click.echo(json.dumps(run_as_dict(Client().runs.cancel(job_id))))
        return
    click.echo(json.dumps(Client().cancel(job_id).as_dict()))


@main.command()
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="show progress until the retry job ends")
@click.option("--json", "as_json", is_flag=True, help="end with one JSON line")
def retry(job_id: str, wait: bool, as_json: bool) -> None:
    """Re-run only the items of JOB_ID that ended `error`, as a new job (same task, model
    version, parameters and callback; its parent_job_id is JOB_ID); prints its id. The job
    must have ended, with at least one item `error`."""
    from ops.progress import wait_with_bar
    from producers import Client

    client = Client()
    new_id = client.retry(job_id)
    view = wait_with_bar(client, new_id) if wait else client.status(new_id)
    click.echo(json.dumps(view.as_dict()) if as_json else new_id)
    if wait and view.status != "succeeded":
        sys.exit(1)


@main.command()
@click.option("--port", default=5555, show_default=True, type=int)
@click.option("--address", default="127.0.0.1", show_default=True)
def flower(port: int, address: str) -> None:
    """Serve Flower (Celery's monitor) for this Sluice's broker; needs `pip install flower`.
    The same app for other Celery tools: `celery -A ops.celery_entry ...`."""
    import importlib.util

    if importlib.util.find_spec("flower") is None:
        raise SluiceError("Flower is not installed: `pip install flower`, then run this again")
    from ops.celery_entry import app

    app.start(["flower", f"--port={port}", f"--address={address}"])


@main.command()
def migrate() -> None:
    """Bring the ledger's schema to this version (stop workers of an older version first:
    a worker refuses to start when the schema is not its own)."""
    from storage.engine import make_engine, migrate, schema_revisions

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    before = schema_revisions(engine)[0]
    migrate(engine)
    after = schema_revisions(engine)[0]
    click.echo(f"schema: {before or 'none'} -> {after}" if before != after else f"schema: {after}")


@main.command()
def sweep() -> None:
    """Re-send lost chunks and settle finished jobs once (the worker with --beat does this
    periodically)."""
    from ops.worker import sweep_now

    click.echo(json.dumps(sweep_now(Settings())))


@main.command()
@click.option("--limit", default=20)
def jobs(limit: int) -> None:
    """The most recent jobs."""
    from producers import Client

    for view in Client().ledger.jobs(limit):
        d = view.as_dict()
        cached = f" ({d['cached']} cached)" if d["cached"] else ""
        click.echo(
            f"{d['job_id']}  {d['status']:<16} {d['task']:<15} "
            f"{d['processed']}/{d['total']}{cached}  {d['created_at']}"
        )


@main.command()
@click.option("--tenant", default=None, help="one tenant (default: every tenant)")
@click.option("--since", default=None, type=click.DateTime(["%Y-%m-%d"]), help="first UTC day")
@click.option("--until", default=None, type=click.DateTime(["%Y-%m-%d"]), help="last UTC day")
@click.option("--json", "as_json", is_flag=True, help="one JSON line per day, tenant and task")
def usage(tenant: str | None, since: Any, until: Any, as_json: bool) -> None:
    """Usage per UTC day, tenant and task: items by outcome, model seconds, tokens."""
    from producers import Client
    from storage.usage import Usage

    rows = Usage(Client().ledger.engine).rows(
        tenant, since.date() if since else None, until.date() if until else None
    )
    for row in rows:
        if as_json:
            click.echo(json.dumps(row.as_dict()))
            continue
        tokens = "-" if row.tokens is None else str(row.tokens)
        click.echo(
            f"{row.day}  {row.tenant:<16} {row.task:<15} ok={row.ok} invalid={row.invalid} "
            f"error={row.error}  model_s={row.model_seconds:.3f}  tokens={tokens}"
        )


@main.group()
def models() -> None:
    """The model registry, and the models Sluice makes for its tests."""


@models.command("build")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="rebuild even if present")
def models_build(names: tuple[str, ...], force: bool) -> None:
    """Make the test and demo models into DATA_DIR/models (cached; all unless NAMES):
    digits images, synthesised sounds, breast-cancer and diabetes records, two random tiny
    speech recognisers, two digit spellers (tiny-spell-seq2seq, tiny-spell-causal), an
    entity tagger (tiny-entities) and an extractive reader (tiny-qa)."""
    from ops.demo_data import build_models

    for name, metrics in build_models(Settings(), list(names) or None, force).items():
        click.echo(f"{name}: {json.dumps(metrics)}")


# -- front doors (issue 5): the REST API, API keys, warehouse enrichment ------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="uvicorn processes")
def api(host: str, port: int, workers: int) -> None:
    """Serve the REST API (OpenAPI at /openapi.json, docs at /docs, metrics at /metrics) and
    the web console at / (sign in with an API key)."""
    import uvicorn

    from ops.console.site import create_site

    if workers > 1:
        from producers import Client

        Client()  # here, before the children: a host of another cluster exits 2 with why
        uvicorn.run(
            "ops.console.site:create_site", factory=True, host=host, port=port, workers=workers
        )
    else:
        uvicorn.run(create_site(Settings()), host=host, port=port)


@main.group("api-keys")
def api_keys() -> None:
    """Create, list and revoke API keys (each bound to one tenant)."""


def _keys() -> Any:
    from producers import Client
    from storage.apikeys import ApiKeys

    return ApiKeys(Client().ledger.engine)


@api_keys.command("create")
@click.option("--tenant", required=True)
@click.option("--name", default=None, help="a note, e.g. who uses it")
@click.option(
    "--role",
    type=click.Choice(["tenant", "operator"]),
    default="tenant",
    show_default=True,
    help="operator: /metrics, every tenant's jobs, sharing models",
)
def api_keys_create(tenant: str, name: str | None, role: str) -> None:
    """Print a new key and its callback signing secret, ONCE (only a hash is kept)."""
    from schemas.tenants import Role

    new = _keys().create(tenant, name, Role(role))
    click.echo(
        json.dumps(
            {
                "id": new.info.id,
                "tenant": new.info.tenant,
                "role": new.info.role.value,
                "key": new.key,
                "callback_secret": new.secret,
            }
        )
    )
    click.echo("store the key and the secret now: they are not shown again", err=True)


@api_keys.command("list")
@click.option("--tenant", default=None)
def api_keys_list(tenant: str | None) -> None:
    for k in _keys().list(tenant):
        click.echo(
            f"{k.id}  {k.tenant:<20} {k.role.value:<8} {'revoked' if k.revoked else 'active':<8} "
            f"{k.created_at.isoformat()}  {k.name or ''}"
        )


@api_keys.command("revoke")
@click.argument("key_id")
def api_keys_revoke(key_id: str) -> None:
    if not _keys().revoke(key_id):
        raise SluiceError(f"no active key with id {key_id!r}")
    click.echo(f"revoked {key_id}")


@main.command()
@click.option("--source", "source_url", required=True, help="SQLAlchemy URL of the source DB")
@click.option("--table", required=True, help="TABLE or SCHEMA.TABLE")
@click.option("--key-column", required=True, help="unique key; the destination's primary key")
@click.option("--text-column", default="text", show_default=True)
@click.option(
    "--media-column",
    default=None,
    help="images/audio: the column of paths or URIs (records read the model's feature columns)",
)
@click.option("--task", required=True, type=TaskName())
@click.option("--dest-table", required=True, help="created if missing; rows upserted on key")
@click.option("--dest-url", default=None, help="destination DB (default: the source)")
@click.option("--since-column", default=None, help="only rows newer than the last run's")
@click.option(
    "--where",
    "where",
    multiple=True,
    help="COLUMN OP VALUE (= != < <= > >=), repeatable, ANDed; the value is bound",
)
@click.option("--full", is_flag=True, help="ignore the watermark: enrich every row")
@click.option(
    "--max-retries",
    default=3,
    show_default=True,
    type=click.IntRange(0),
    help="with --since-column: how many later runs read a row again after it ended `error`",
)
@click.option("--model", default=None)
@with_param_options(CATALOG)
@click.option("--explain", default="none")
@click.option(
    "--explain-steps",
    default=None,
    type=click.IntRange(MIN_EXPLAIN_STEPS, MAX_EXPLAIN_STEPS),
    help=EXPLAIN_STEPS_HELP,
)
@click.option("--priority", default=5, type=click.IntRange(0, 9))
@click.option("--no-cache", is_flag=True, help=NO_CACHE_HELP)
@click.option("--retention", default=None, help=RETENTION_HELP)
@click.option("--redact", default=None, type=REDACT_MODES, help=REDACT_HELP)
@click.option("--redact-types", default=None, help=REDACT_TYPES_HELP)
@click.option("--timeout", default=None, type=float, help="give up waiting after SECONDS")
@click.option("--json", "as_json", is_flag=True)
def enrich(
    source_url: str,
    table: str,
    key_column: str,
    text_column: str,
    media_column: str | None,
    task: str,
    dest_table: str,
    dest_url: str | None,
    since_column: str | None,
    where: tuple[str, ...],
    full: bool,
    max_retries: int,
    model: str | None,
    explain: str,
    explain_steps: int | None,
    priority: int,
    no_cache: bool,
    retention: str | None,
    redact: str | None,
    redact_types: str | None,
    timeout: float | None,
    as_json: bool,
    **task_params: Any,
) -> None:
    """Enrich rows of a SQL table and upsert the outputs into --dest-table. A run that was
    killed (or timed out waiting) is resumed by the next run of the same command."""
    from producers import Client
    from producers.enrich import Condition, EnrichSpec, SourceSpec
    from producers.enrich import enrich as run_enrich

    source = SourceSpec(
        url=source_url,
        table=table,
        key_column=key_column,
        text_column=text_column,
        where=[Condition.parse(w) for w in where],
        since_column=since_column,
        media_column=media_column,
    )
    options: dict[str, Any] = {
        "explain": explain,
        **({"explain_steps": explain_steps} if explain_steps else {}),
        "priority": priority,
        **({"cache": False} if no_cache else {}),  # the cache on: the fingerprint as before
        **({"retention": retention} if retention else {}),
        **({"redact": redact, "redact_types": redact_types} if redact or redact_types else {}),
        **param_values(CATALOG, task_params),
    }
    spec = EnrichSpec(
        source=source,
        dest_table=dest_table,
        task=task,
        dest_url=dest_url,
        model=model,
        options=options,
        max_retries=max_retries,
    )
    source.validate()  # hostile names are refused before anything connects
    report = run_enrich(Client(), spec, full=full, timeout=timeout)
    d = report.as_dict()
    if as_json:
        click.echo(json.dumps(d))
    else:
        click.echo(
            f"{'resumed: ' if d['resumed'] else ''}{d['rows_read']} rows read "
            f"({d['rows_retried']} retried after an error), {d['rows_written']} written to "
            f"{dest_table} (job {d['job_id']}, {d['status']}) in {d['seconds']}s"
            + (
                f"; {d['rows_given_up']} rows still `error` after {max_retries} retries, "
                "not read again until they change"
                if d["rows_given_up"]
                else ""
            )
        )
    if report.status not in ("succeeded", "nothing-to-do"):
        sys.exit(1)


# `sluice train`, `sluice runs` and `sluice models list|show|promote|archive|share`
register_training_commands(main, models, TaskName())
register_cache_commands(main)  # `sluice cache stats|clear`
register_pii_commands(main)  # `sluice pii types|key|forget-secret`
register_listen_command(main)  # `sluice listen PIPELINES_FILE`


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
