"""What a job records: the options every submit shares, checked; the tenant's input roots;
the spec of a retry (a new job of a finished job's items that ended `error`). Client records
and sends them, through one path."""

from typing import Any

from schemas import callback_urls
from schemas.catalog import check_code_path
from schemas.errors import RetryRefusedError, SluiceError
from schemas.explainer_settings import EXPLAINER_PARAM, job_explainer
from schemas.jobs import ExplainPolicy, Item, JobSpec
from schemas.settings import Settings
from schemas.storable import json_problem, unstorable_text
from schemas.task_spec import TaskSpec
from storage.ledger import JobView


def check_storable_texts(texts: dict[str, str | None]) -> None:
    """Options recorded as text ({what: value}) that no database could store are refused."""
    for name, value in texts.items():
        if value and (problem := unstorable_text(value)):
            raise SluiceError(f"{name} {problem}")


def checked_params(
    spec: TaskSpec,
    settings: Settings,
    *,
    explain: str,
    priority: int,
    texts: dict[str, str | None],
    task_params: dict[str, Any],
    explain_steps: int | None = None,
) -> dict[str, Any]:
    """The task's parameters, checked with the options every front door shares: the
    explanation policy and its steps (the job's explainer is recorded with them), the
    priority, the texts recorded with the job (by name: callback_url, model, idempotency key)
    and the callback URL (not http(s), or a literal private address)."""
    check_code_path(spec.handler, f"task {spec.name}: handler")
    ExplainPolicy.parse(explain)
    if explain != "none" and not spec.explainable:
        raise SluiceError(f"task {spec.name!r} makes no explanation; use --explain none")
    if not 0 <= priority <= 9:
        raise SluiceError(f"priority must be between 0 and 9, got {priority}")
    params = spec.check_params(task_params, settings)
    if problem := json_problem(params):
        raise SluiceError(f"task {spec.name!r}: a parameter {problem}")
    if (explainer := job_explainer(spec, settings, explain, explain_steps)) is not None:
        params[EXPLAINER_PARAM] = explainer
    check_storable_texts(texts)
    if callback_url := texts.get("callback_url"):
        callback_urls.check_callback_url(callback_url, settings.callback_allow_private)
    return params


def table_selection(
    spec: TaskSpec, own: list[tuple[str, str, str]], options: dict[str, Any]
) -> list[tuple[str, str, str]]:
    """What a table's row is read with (`sluice enrich`, SQL sources): the columns the
    task's modality reads (`own`: the text column, the media column, a records model's
    features; a task that reads no text column drops it) and the fields its parameters name
    (a prompt template's, a question's), as (column, name, what) triples."""
    columns = own if spec.params.reads_text_column else []
    return columns + [(c, c, "field") for c in spec.params.row_fields(options)]


def with_input_roots(params: dict[str, Any], settings: Settings, tenant: str | None) -> None:
    """Record in `params` the input roots `tenant` may read as of now: the workers read its
    media under those only, as the producer did. The operator's own tenant reads everything
    the server can, so nothing is recorded for it."""
    if (roots := settings.tenant_roots(tenant)) is not None:
        params["input_roots"] = [str(r) for r in roots]
        params["object_prefixes"] = list(settings.tenant_prefixes(tenant) or ())


def refuse_unretryable(parent: JobView, failed: list[Item]) -> None:
    """A retry needs a job that has ended with at least one item `error`."""
    if not parent.status.finished:
        raise RetryRefusedError(f"job {parent.id} is still {parent.status}; retry it once it ends")
    if not failed:
        raise RetryRefusedError(
            f"job {parent.id} has no item that ended `error`: there is nothing to retry"
        )


def retry_spec(
    parent: JobView,
    settings: Settings,
    idempotency_key: str | None = None,
    api_key_id: str | None = None,
) -> JobSpec:
    """The parent's task, model version, parameters, explanation policy, priority and
    callback, for its tenant; the input roots are the tenant's as of now (a root withdrawn
    since is not reached through a retry)."""
    params = dict(parent.params)
    params.pop("input_roots", None)
    params.pop("object_prefixes", None)
    with_input_roots(params, settings, parent.tenant)
    return JobSpec(
        task=parent.task,
        model=parent.model,
        model_version=parent.model_version,
        params=params,
        explain=parent.explain_policy,
        priority=parent.priority,
        source=f"retry:{parent.id}",
        tenant=parent.tenant,
        api_key_id=api_key_id,
        callback_url=parent.callback_url,
        parent_job_id=parent.id,
        idempotency_key=idempotency_key,
    )


def retry_lineage(parent: JobView, now: dict[str, Any]) -> dict[str, Any]:
    """A retry runs the parent's model version (the worker checks it): the parent's model
    lineage stands; Sluice's version is today's."""
    if parent.lineage is None:  # a parent recorded before lineage was
        return now
    return {**parent.lineage, "sluice_version": now["sluice_version"]}


# A chunk explained row by row runs ~70x longer than one that is not (24 integration steps,
# each a forward and a backward pass): smaller chunks keep it far from the chunk time limit
# and keep progress and a retry's lost work small.
EXPLAINED_CHUNK = 64


def chunk_size_for(spec: TaskSpec, job: JobSpec, configured: int | None) -> int:
    """Items per chunk: SLUICE_CHUNK_SIZE if set; else the task's, at most EXPLAINED_CHUNK (or
    the task's own explained_chunk_size) when the job explains every row."""
    if configured:
        return configured
    if spec.explainer is not None and ExplainPolicy.parse(job.explain).kind == "all":
        return min(spec.chunk_size, spec.explained_chunk_size or EXPLAINED_CHUNK)
    return spec.chunk_size
