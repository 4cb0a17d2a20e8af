"""`sluice train`, training runs in `sluice status`/`cancel`, and the registry commands
(`sluice models list|show|promote|archive`)."""

import json
import sys
from dataclasses import asdict
from typing import Any

import click

from schemas.training import progress_line


def run_as_dict(run: Any) -> dict[str, Any]:
    d = asdict(run)
    d["progress"] = dict(d["progress"])
    d["run_id"] = d.pop("id")
    d.pop("spec", None)
    d["summary"] = progress_line(run.progress) if run.status == "running" else run.status
    history = d["progress"].pop("history", None) or []
    d["progress"]["last_epoch"] = history[-1] if history else None  # all: models show
    for key in ("created_at", "started_at", "finished_at", "lease_expires_at"):
        d[key] = d[key].isoformat() if d.get(key) else None
    return d


def version_as_dict(view: Any) -> dict[str, Any]:
    d = asdict(view)
    d["ref"] = view.ref
    d["below_baseline"] = view.below_baseline
    for key in ("created_at", "updated_at"):
        d[key] = d[key].isoformat() if d.get(key) else None
    return d


def _dp(view: Any) -> str:
    if not view.dp:
        return "-"
    return f"ε={view.dp['epsilon']:.2f} δ={view.dp['delta']:g}"


def _metric(view: Any) -> str:
    shown = [
        f"{k.removeprefix('heldout_')}={v:.4f}"
        for k, v in sorted(view.metrics.items())
        if k.startswith("heldout_") and isinstance(v, float)
    ]
    return " ".join(shown) or "-"


def _baseline(view: Any) -> str:
    """The baseline's held-out figure, as _metric shows the model's; `!` when it is better."""
    base = view.baseline
    if base is None or not isinstance(base.get("value"), float):
        return "-"
    flag = "!" if view.below_baseline else ""
    return f"{flag}{str(base['metric']).removeprefix('heldout_')}={base['value']:.4f}"


def warn_below_baseline(views: list[Any]) -> None:
    for view in views:
        if view.below_baseline and view.stage != "archived":
            click.echo(f"warning: {view.below_baseline}", err=True)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def wait_for_run(client: Any, run_id: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ops.progress import err

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
    ) as bar:
        task = bar.add_task(run_id, total=None, detail="queued")

        def show(run: Any) -> None:
            p = run.progress
            bar.update(
                task,
                total=p.get("epochs"),
                completed=p.get("epoch", 0),
                detail=progress_line(p) if p else run.status,
            )

        return client.wait_training(run_id, on_progress=show)


def register_training_commands(
    main: click.Group, models: click.Group, task_type: click.ParamType
) -> None:
    """Add the training commands to `main` and its `models` group (their SluiceGroup turns a
    SluiceError into exit 2); `task_type` checks a task name against the catalog (a task
    without a training recipe is refused at submit, with the trainable ones listed)."""

    @main.command()
    @click.option("--task", required=True, type=task_type)
    @click.option(
        "--data",
        required=True,
        help="a JSONL/CSV/Parquet file or object (s3://...), or a table name with --data-url",
    )
    @click.option(
        "--data-url", default=None, help="SQLAlchemy URL of the database holding the --data table"
    )
    @click.option(
        "--label-column",
        required=True,
        help="what the model learns to give: the class (classifiers), the number "
        "(regressors), the target text of each --text-column input (generate), or the "
        "entity spans or BIO tags of each text (extract-entities)",
    )
    @click.option("--name", required=True, help="the model name it registers under")
    @click.option(
        "--base",
        default=None,
        help="start from this model (directory, hub id or "
        "NAME@VERSION); text default: all-MiniLM-L6-v2; generate: required (a "
        "sequence-to-sequence or decoder-only model)",
    )
    @click.option(
        "--epochs",
        default=None,
        type=click.IntRange(1, 10_000),
        help="the most epochs (default: chosen by early stopping on a validation split of the "
        "training rows where the task carves one, else 10)",
    )
    @click.option(
        "--no-early-stopping",
        "early_stopping",
        flag_value=False,
        default=None,
        help="train every epoch and keep the last",
    )
    @click.option(
        "--workers",
        default=1,
        show_default=True,
        type=click.IntRange(1, 256),
        help="Ray Train workers (DDP)",
    )
    @click.option(
        "--gpus-per-worker",
        default=None,
        type=click.FloatRange(0),
        help="default: 1 when the Ray cluster has GPUs, else 0",
    )
    @click.option(
        "--batch-size",
        default=None,
        type=click.IntRange(1),
        help="the global batch (default: by the number of rows for records and text, else 32)",
    )
    @click.option("--learning-rate", default=None, type=click.FloatRange(0, min_open=True))
    @click.option("--train-encoder", is_flag=True, help="text: fine-tune the encoder too")
    @click.option(
        "--dp-epsilon", default=None, type=float, help="train with DP-SGD (Opacus) to this ε"
    )
    @click.option("--dp-delta", default=None, type=float)
    @click.option(
        "--dp-max-grad-norm",
        default=1.0,
        show_default=True,
        type=click.FloatRange(0, min_open=True),
        help="per-sample clipping bound",
    )
    @click.option(
        "--labels",
        default=None,
        help="classifiers: the expected classes a,b,c (checked); extract-entities: the "
        "entity types to keep, in this order",
    )
    @click.option(
        "--text-column",
        default="text",
        show_default=True,
        help="text: the input column (extract-entities: a text, or a list of tokens)",
    )
    @click.option("--media-column", default="path", show_default=True)
    @click.option("--key-column", default=None, help="an id column, never a feature")
    @click.option(
        "--feature-columns",
        default=None,
        help="records: a,b,c (default: all but the label and key)",
    )
    @click.option("--seed", default=0, show_default=True, type=int)
    @click.option(
        "--tenant",
        default="default",
        show_default=True,
        help="the tenant the model is registered for (its names, stages and base models)",
    )
    @click.option("--promote", is_flag=True, help="promote the new version to production")
    @click.option("--wait", is_flag=True, help="show progress until the run ends")
    @click.option("--json", "as_json", is_flag=True, help="end with one JSON line")
    def train(
        task: str,
        data: str,
        data_url: str | None,
        label_column: str,
        name: str,
        labels: str | None,
        feature_columns: str | None,
        tenant: str,
        promote: bool,
        wait: bool,
        as_json: bool,
        **options: Any,
    ) -> None:
        """Train or fine-tune a model on Ray Train, through the queue `sluice.train`; the
        result is registered as NAME's next version."""
        from producers import Client

        if promote and not wait:
            raise click.UsageError("--promote needs --wait")
        client = Client()
        run_id = client.submit_training(
            task=task,
            name=name,
            data=data,
            data_url=data_url,
            label_column=label_column,
            labels=_split(labels),
            feature_columns=_split(feature_columns),
            tenant=tenant,
            **options,
        )
        if not wait:
            click.echo(json.dumps({"run_id": run_id}) if as_json else run_id)
            return
        run = wait_for_run(client, run_id)
        if run.status == "succeeded" and promote:
            client.registry.promote(name, run.model_version, tenant)
        out = run_as_dict(client.training_run(run_id))
        if run.model_version is not None:
            version = client.registry.get(name, run.model_version, tenant)
            out["model"] = version_as_dict(version)
            warn_below_baseline([version])
        click.echo(
            json.dumps(out)
            if as_json
            else f"{run_id} {run.status}"
            + (f": {name}@{run.model_version}" if run.model_version else "")
            + (f" ({run.error})" if run.error else "")
        )
        if run.status != "succeeded":
            sys.exit(1)

    @main.command()
    @click.option("--limit", default=20)
    def runs(limit: int) -> None:
        """The most recent training runs."""
        from producers import Client

        for run in Client().runs.list(limit):
            line = (
                progress_line(run.progress)
                if run.status == "running"
                else (f"{run.name}@{run.model_version}" if run.model_version else run.error or "")
            )
            click.echo(f"{run.id}  {run.status:<10} {run.task:<16} {run.name:<24} {line}")

    @models.command("list")
    @click.argument("name", required=False)
    @click.option("--tenant", default=None, help="only this tenant's (default: every tenant's)")
    @click.option("--json", "as_json", is_flag=True)
    def models_list(name: str | None, tenant: str | None, as_json: bool) -> None:
        """Registered model versions: tenant, stage, held-out metrics, the classical
        baseline's figure on the same split (`!`: better than the model; a warning follows),
        DP budget."""
        from producers import Client

        views = Client().registry.list(name, tenant)
        for v in views:
            if as_json:
                click.echo(json.dumps(version_as_dict(v)))
            else:
                click.echo(
                    f"{v.tenant:<12} {v.ref:<32} {v.stage:<10} {v.task:<16} {_metric(v):<28} "
                    f"baseline {_baseline(v):<18} DP {_dp(v):<18} {v.created_at:%Y-%m-%d %H:%M}"
                )
        if not as_json:
            warn_below_baseline(views)
        if not views and not as_json:
            click.echo("no registered models; train one with `sluice train`", err=True)

    @models.command("show")
    @click.argument("ref")
    @click.option(
        "--tenant",
        default="default",
        show_default=True,
        help="whose registry: names and stages belong to a tenant",
    )
    def models_show(ref: str, tenant: str) -> None:
        """One version (NAME@VERSION, NAME@production...) in full, with its training run."""
        from producers import Client

        client = Client()
        view = client.registry.resolve(ref, tenant)
        out = version_as_dict(view)
        warn_below_baseline([view])
        if view.training_run_id:
            run = client.training_run(view.training_run_id)
            out["training"] = {
                "run_id": run.id,
                "spec": run.spec,
                "history": run.progress.get("history"),
                "ddp": run.progress.get("ddp"),
            }
        click.echo(json.dumps(out, indent=2))

    @models.command("promote")
    @click.argument("name")
    @click.argument("version", type=int)
    @click.option(
        "--tenant",
        default="default",
        show_default=True,
        help="whose registry: names and stages belong to a tenant",
    )
    def models_promote(name: str, version: int, tenant: str) -> None:
        """Make VERSION the production version of the tenant's NAME (the previous one is
        archived)."""
        from producers import Client

        view = Client().registry.promote(name, version, tenant)
        click.echo(json.dumps(version_as_dict(view)))

    @models.command("archive")
    @click.argument("name")
    @click.argument("version", type=int)
    @click.option(
        "--tenant",
        default="default",
        show_default=True,
        help="whose registry: names and stages belong to a tenant",
    )
    def models_archive(name: str, version: int, tenant: str) -> None:
        """Retire a version: NAME@production and NAME@latest stop naming it; jobs can still
        ask for it by number."""
        from producers import Client

        view = Client().registry.archive(name, version, tenant)
        click.echo(json.dumps(version_as_dict(view)))

    @models.command("share")
    @click.argument("ref")
    @click.option("--tenant", "grantee", default=None, help="the tenant that may use it")
    @click.option("--public", is_flag=True, help="every tenant may use it")
    @click.option("--owner", default="default", show_default=True, help="whose model")
    @click.option("--revoke", is_flag=True, help="take the share back")
    def models_share(ref: str, grantee: str | None, public: bool, owner: str, revoke: bool) -> None:
        """Let another tenant use NAME (every version, stages as the owner sets them) or
        NAME@VERSION (that version only). It names them like its own: NAME@production."""
        from producers import Client
        from producers.model_sharing import share_ref

        engine = Client().ledger.engine
        click.echo(json.dumps(share_ref(engine, ref, owner, grantee, public, revoke)))
