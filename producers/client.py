"""The Python SDK: submit work, follow it, read results. Everything the CLI does goes here."""

import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any

from producers import model_refs
from producers.adapters import ReadOptions, adapter_for
from producers.adapters.media_items import media_item
from producers.adapters.record_items import record_item
from producers.dispatch import CeleryDispatcher, Dispatcher
from producers.job_specs import (
    check_storable_texts,
    checked_params,
    chunk_size_for,
    refuse_unretryable,
    retry_lineage,
    retry_spec,
    with_input_roots,
)
from producers.readers import SUFFIXES, iter_rows_to_items, read_rows
from producers.redacting import ItemRedactor, job_redaction, redacted_batches, stored_key
from producers.submit_batches import RECEIVE_BATCH, batches_of, prepared_batches
from producers.training import build_spec
from schemas.catalog import Catalog, load_catalog
from schemas.errors import ModelError, NotQueuedError, SluiceError
from schemas.jobs import RESULT_CACHE_PARAM, Item, JobSpec, check_unique_keys
from schemas.object_refs import is_object_uri, normalised_uri
from schemas.redaction import REDACTION_PARAM, PiiModel
from schemas.retention import MAX_SECONDS, job_retention_s, parse_duration, retry_retention_s
from schemas.settings import Settings
from schemas.stack import endpoints, require_broker
from schemas.states import RunStatus
from schemas.storable import escaped_text
from schemas.task_spec import ModelKind
from schemas.tenants import DEFAULT_TENANT, check_tenant
from schemas.training import MODEL_SELECTOR_RE
from storage import export
from storage.admission import FairShare
from storage.clock import host_now
from storage.cluster_identity import require_same_cluster
from storage.engine import make_engine, prepare_schema
from storage.erasure import Erased, Erasure
from storage.ledger import JobView, Ledger
from storage.lineage import row_lineage
from storage.model_artifacts import ModelCache
from storage.object_store import ObjectStore
from storage.registry import Registry
from storage.row_sources import WHOLE_OBJECT_MAX_BYTES
from storage.tenancy import TenantReads
from storage.tenant_secrets import tenant_secret
from storage.training_runs import RunView, TrainingRuns

ENTITY_TASK = "extract-entities"  # the task of SLUICE_PII_MODEL
FIRST_POLL_S = 0.02  # Client.wait's first pause: a job answered from the cache is done by then


class Client:
    """`dispatcher`: what sends the messages (default: Celery, by task name); a
    RecordingDispatcher (producers/dispatch_recording.py) records them instead."""

    receive_batch = RECEIVE_BATCH  # items per transaction of a large job (tests lower it)

    def __init__(
        self, settings: Settings | None = None, dispatcher: Dispatcher | None = None
    ) -> None:
        self.settings = settings or Settings()
        self.catalog: Catalog = load_catalog(self.settings.task_modules)
        self.endpoints = endpoints(self.settings)
        engine = make_engine(self.endpoints.database_url)
        prepare_schema(engine)
        queue_of = {spec.name: spec.queue for spec in self.catalog}
        self.ledger = Ledger(engine, FairShare.from_settings(self.settings, queue_of))
        self.runs = TrainingRuns(engine)
        self.registry = Registry(engine)
        self.reads = TenantReads(engine)
        self.store = ObjectStore(self.settings.storage_options)
        self.models = ModelCache(
            self.settings.model_cache_dir(), self.store, self.settings.max_model_bytes
        )
        self.dispatcher: Dispatcher = dispatcher or CeleryDispatcher(
            self.endpoints.broker_url, self.settings
        )
        if isinstance(self.dispatcher, CeleryDispatcher):  # one that records sends nowhere
            # the broker's Sluice cluster is this ledger's: one SELECT, one Redis round trip
            require_same_cluster(engine, self.dispatcher.broker_url, claim=False)

    # -- submitting ---------------------------------------------------------------------------

    def submit_file(
        self,
        path: str | Path,
        task: str,
        *,
        text_column: str = "text",
        key_column: str | None = None,
        media_column: str = "path",
        **options: Any,
    ) -> str:
        """Submit a file: texts or records from JSONL/CSV/Parquet; images or audio from a
        folder, or from a list file whose `media_column` holds paths, file:// or data: URIs.
        Options: model, explain, explain_steps (the explainer's steps for this job; default
        SLUICE_EXPLAIN_STEPS, else the catalog's), retention (how long its data is kept after
        it ends: "30d", or seconds; at most the tenant's limit, which is the default),
        priority, cache (False: run the model even for rows this tenant's result cache
        holds), and the task's own parameters (its catalog spec's parameters model, e.g.
        labels=[...] for zero-shot-text)."""
        spec = self.catalog.get(task)
        if isinstance(path, str) and is_object_uri(path):
            return self._submit_object(path, task, text_column, key_column, media_column, options)
        path = Path(path)
        if path.is_dir():
            files = adapter_for(spec.modality).items_from_folder(path, self.settings)
            return self._submit(files, task, source=str(path), **options)
        columns, rows = read_rows(path)
        return self._submit_rows(
            columns, rows, task, str(path), path.parent.resolve(),
            text_column, key_column, media_column, options,
        )  # fmt: skip

    def _submit_object(
        self,
        uri: str,
        task: str,
        text_column: str,
        key_column: str | None,
        media_column: str,
        options: dict[str, Any],
    ) -> str:
        """A list file in the object store (read through a local copy), or a prefix of
        media objects (one listing; every object's stamp pinned)."""
        spec = self.catalog.get(task)
        source = normalised_uri(uri)
        if Path(source).suffix.lower() not in SUFFIXES:
            items = adapter_for(spec.modality).items_from_prefix(source, self.settings)
            return self._submit(items, task, source=source, **options)
        local = self.store.fetch_file(source, WHOLE_OBJECT_MAX_BYTES)
        try:
            columns, rows = read_rows(local, source=source)
            # no base directory: a relative reference in it is read as this host's path
            return self._submit_rows(
                columns, rows, task, source, None, text_column, key_column, media_column, options
            )
        finally:
            local.unlink(missing_ok=True)

    def _submit_rows(
        self,
        columns: list[str],
        rows: Iterator[dict[str, Any]],
        task: str,
        source: str,
        base_dir: Path | None,
        text_column: str,
        key_column: str | None,
        media_column: str,
        options: dict[str, Any],
    ) -> str:
        ref = self.resolve_model(options.pop("model", None), task)
        items = self.iter_items_from_rows(
            columns,
            rows,
            task,
            ref=ref,
            key_column=key_column,
            text_column=text_column,
            media_column=media_column,
            base_dir=base_dir,
            source=source,
        )
        return self._submit(items, task, source=source, ref=ref, **options)

    def submit_texts(self, texts: Iterable[str] | dict[str, str], task: str, **options: Any) -> str:
        """Submit texts from memory: a list (keys are 1, 2, ...) or a {key: text} mapping."""
        pairs = texts.items() if isinstance(texts, dict) else enumerate(texts, 1)
        rows = [{"key": str(k), "text": v} for k, v in pairs]
        items = iter_rows_to_items(
            ["key", "text"],
            iter(rows),
            text_column="text",
            key_column="key",
            max_chars=self.settings.max_text_chars,
            source="texts",
        )
        return self._submit(items, task, source=options.pop("source", "sdk"), **options)

    def submit_media(
        self, refs: Iterable[str | Path] | dict[str, str], task: str, **options: Any
    ) -> str:
        """Submit images or audio by reference: paths, file:// URIs or data: URIs, as a list
        (keyed by the reference itself) or a {key: reference} mapping."""
        pairs = refs.items() if isinstance(refs, dict) else ((str(r), str(r)) for r in refs)
        items = [media_item(str(k), str(v), None, self.settings) for k, v in pairs]
        return self._submit(items, task, source=options.pop("source", "sdk"), **options)

    def submit_records(
        self, records: dict[str, dict[str, Any]], task: str, *, model: str, **options: Any
    ) -> str:
        """Submit records from memory as {key: {feature: value}}; checked against the model's
        feature schema, each bad record named with its column."""
        ref = self.resolve_model(model, task)
        features = model_refs.record_features(ref.path)
        items = [record_item(str(k), row, features, ()) for k, row in records.items()]
        return self._submit(items, task, source=options.pop("source", "sdk"), ref=ref, **options)

    def resolve_model(
        self, model: str | None, task: str, tenant: str | None = None
    ) -> model_refs.ModelRef:
        """The model a job of `task` runs with, checked against the catalog's requirements.
        For an API tenant: registry names it owns or that are shared with it, packaged models
        and what its grant allows (schemas/tenants.py); the server's default model too."""
        spec = self.catalog.get(task)
        if spec.model.kind is ModelKind.NONE:
            if model is not None:
                raise ModelError(f"task {task!r} uses no model; drop --model")
            return model_refs.NO_MODEL
        owner = tenant or DEFAULT_TENANT
        hub_only = False
        if model is None:
            if not spec.model.uses_default_model:
                raise SluiceError(
                    f"task {task!r} needs a model: pass --model with {spec.model.description}"
                )
            model, owner = self.settings.default_model, DEFAULT_TENANT  # the server's, for all
        elif (grant := self.settings.grant_for(tenant)) is not None:
            if MODEL_SELECTOR_RE.match(model):  # never a path probe: always the registry
                view = self.registry.resolve(model, owner)
                return model_refs.from_registry(view, spec, self.settings.data_dir, self.models)
            hub_only = model_refs.check_granted(model, grant)
        if not hub_only and MODEL_SELECTOR_RE.match(model) and not Path(model).exists():
            view = self.registry.resolve(model, owner)
            return model_refs.from_registry(view, spec, self.settings.data_dir, self.models)
        return model_refs.resolve(model, spec, self.settings.data_dir, hub_only, self.models)

    def pii_model(self) -> PiiModel | None:
        """The entity model workers redact names, places and organisations with
        (SLUICE_PII_MODEL, the operator's: every tenant's jobs use it), resolved."""
        if self.settings.pii_model is None:
            return None
        ref = self.resolve_model(self.settings.pii_model, ENTITY_TASK)
        return PiiModel(name=ref.name, version=ref.version, path=ref.load_from)

    def stored_key(self, key: str, tenant: str | None = None) -> str:
        """What `key` is stored as by a job of `tenant` under `--redact hash` (or mask): the
        key its results are found under, for joining them back to the original rows."""
        return stored_key(self.ledger.engine, key, tenant or DEFAULT_TENANT)

    def iter_items_from_rows(
        self,
        columns: list[str],
        rows: Iterator[dict[str, Any]],
        task: str,
        *,
        model: str | None = None,
        key_column: str | None = None,
        text_column: str = "text",
        media_column: str = "path",
        base_dir: Path | None = None,
        source: str = "rows",
        ref: model_refs.ModelRef | None = None,
        tenant: str | None = None,
    ) -> Iterator[Item]:
        """Rows of any modality to items as they are read, by the task's modality adapter
        (never all held: a file or table of any size streams into `submit_items`): texts, media
        references or records (checked against the model's feature schema). `ref`: the
        model already resolved (else `model` is resolved when the adapter needs it). Media
        are read as `tenant` may: under its own input roots."""
        spec = self.catalog.get(task)
        adapter = adapter_for(spec.modality)
        model_path = None
        if adapter.reads_model_schema:
            model_path = (ref or self.resolve_model(model, task, tenant)).path
        opts = ReadOptions(
            self.settings.for_tenant(tenant),
            key_column=key_column,
            text_column=text_column,
            media_column=media_column,
            base_dir=base_dir,
            source=source,
            model_path=model_path,
            keep_fields=spec.params.reads_item_fields,
            needs_text=spec.params.reads_text_column,
        )
        return adapter.iter_items_from_rows(columns, rows, opts)

    def items_from_rows(
        self, columns: list[str], rows: Iterator[dict[str, Any]], task: str, **options: Any
    ) -> list[Item]:
        """iter_items_from_rows, all at once (a capped input: an API body, an upload), every
        repeated key named (DuplicateKeysError)."""
        items = list(self.iter_items_from_rows(columns, rows, task, **options))
        check_unique_keys(items)
        return items

    def submit_items(self, items: Iterable[Item], task: str, **options: Any) -> str:
        """Submit prepared items (the REST API and `sluice enrich` come in here): a list, or
        an iterator of any length, read batch by batch (a large job is written while
        `receiving`). Besides the options of submit_file: tenant, api_key_id, callback_url,
        parent_job_id, idempotency_key (recorded on the job)."""
        return self._submit(items, task, **options)

    def _submit(
        self,
        items: Iterable[Item],
        task: str,
        *,
        model: str | None = None,
        explain: str = "none",
        explain_steps: int | None = None,
        priority: int = 5,
        source: str | None = None,
        ref: model_refs.ModelRef | None = None,
        tenant: str | None = None,
        api_key_id: str | None = None,
        callback_url: str | None = None,
        parent_job_id: str | None = None,
        idempotency_key: str | None = None,
        cache: bool = True,
        redact: str | None = None,
        redact_types: str | list[str] | None = None,
        redact_keys: bool = True,
        retention: str | int | None = None,
        deadline: str | int | None = None,
        **task_params: Any,
    ) -> str:
        retention_s = job_retention_s(retention, self.settings, tenant)
        deadline_s = parse_duration(deadline) if isinstance(deadline, str) else deadline
        if deadline_s is not None and not 1 <= deadline_s <= MAX_SECONDS:
            raise SluiceError(f"a deadline must be between 1s and 99999w, got {deadline!r}")
        params = checked_params(
            self.catalog.get(task),
            self.settings,
            explain=explain,
            priority=priority,
            texts={
                "callback_url": callback_url,
                "model": model,
                "idempotency key": idempotency_key,
            },
            task_params=task_params,
            explain_steps=explain_steps,
        )
        source = escaped_text(source) if source else source
        redactor = None
        if (redaction := job_redaction(redact, redact_types, self.pii_model)) is not None:
            secret = tenant_secret(self.ledger.engine, tenant or DEFAULT_TENANT)
            redactor = ItemRedactor(redaction, secret, redact_keys)
            params = redactor.params(params)  # a question or prompt template is text too
            source = redactor.text(source, "source", []) if source else source
            params[REDACTION_PARAM] = redaction.model_dump(mode="json", exclude_none=True)
        batches = prepared_batches(self.catalog.get(task), params, items, self.receive_batch)
        if redactor is not None:  # each batch as the job records it, before it is written
            batches = redacted_batches(batches, redactor)
        # The first two batches are read before anything is recorded: an input of one batch
        # is checked whole (keys, the task's end-of-input check) and recorded in one
        # transaction; a longer one is written while `receiving` (_record_and_send).
        ahead = list(islice(batches, 2))
        if not ahead:
            raise SluiceError(f"{source}: no items to process")
        job = self._job_spec(
            task,
            params,
            ref or model,
            cache=cache,
            explain=explain,
            priority=priority,
            source=source,
            tenant=tenant or "default",
            api_key_id=api_key_id,
            callback_url=callback_url,
            parent_job_id=parent_job_id,
            idempotency_key=idempotency_key,
            retention_s=retention_s,
            deadline_s=deadline_s,
        )
        return self._record_and_send(job, chain(ahead, batches))

    def standing_job_spec(
        self,
        task: str,
        *,
        model: str | None = None,
        explain: str = "none",
        tenant: str | None = None,
        source: str,
        **task_params: Any,
    ) -> JobSpec:
        """The job an event pipeline's events join (storage/standing_jobs.py): checked and
        resolved as a submit's is, with no items yet."""
        params = checked_params(
            self.catalog.get(task),
            self.settings,
            explain=explain,
            priority=5,
            texts={"model": model},
            task_params=task_params,
        )
        return self._job_spec(
            task,
            params,
            model,
            explain=explain,
            source=source,
            tenant=tenant or "default",
            retention_s=job_retention_s(None, self.settings, tenant),
        )

    def _job_spec(
        self,
        task: str,
        params: dict[str, Any],
        model: "str | model_refs.ModelRef | None",
        *,
        cache: bool = True,
        **fields: Any,
    ) -> JobSpec:
        """A job of checked `params`: its model resolved, where it loads from and what may be
        read recorded in the params, and its lineage."""
        require_broker(self.endpoints)  # early: before a model is resolved (it may download)
        tenant = fields["tenant"]
        ref = model if isinstance(model, model_refs.ModelRef) else None
        ref = ref or self.resolve_model(model, task, tenant)  # type: ignore[arg-type]
        if ref.loads:
            params["model_path"] = ref.load_from
        if ref.registry:
            params["registry"] = ref.registry
        with_input_roots(params, self.settings, tenant)
        if not cache:  # the model runs for every row, and the cache learns its results
            params[RESULT_CACHE_PARAM] = False
        return JobSpec(
            task=task,
            model=ref.name,
            model_version=ref.version,
            params=params,
            lineage=model_refs.job_lineage(ref, self.settings.data_dir),
            **fields,
        )

    def retry(
        self,
        job_id: str,
        tenant: str | None = None,
        idempotency_key: str | None = None,
        *,
        api_key_id: str | None = None,
    ) -> str:
        """Re-run the items of a finished job that ended `error` as a new job (its
        parent_job_id is `job_id`) with the same task, model version, parameters and
        callback; returns its id. `tenant`: the job must be that tenant's (default: anyone's);
        the retry is the job's tenant's, checked against what that tenant may use now. An
        idempotency key seen before gives that job back."""
        parent = self.ledger.job(job_id) if tenant is None else self.reads.job(tenant, job_id)
        if idempotency_key:
            check_storable_texts({"idempotency key": idempotency_key})
            if seen := self.reads.by_idempotency_key(parent.tenant, idempotency_key):
                return seen
        failed = self.reads.failed_items(job_id) if parent.status.finished else []
        refuse_unretryable(parent, failed)
        # What the tenant may use now, not when the parent ran: a model unshared since is not
        # reached through a retry (its roots are re-read by retry_spec).
        named = None if parent.model in ("none", self.settings.default_model) else parent.model
        ref = self.resolve_model(named, parent.task, parent.tenant)
        job = retry_spec(parent, self.settings, idempotency_key, api_key_id)
        job.lineage = retry_lineage(parent, model_refs.job_lineage(ref, self.settings.data_dir))
        # the parent's retention, within the tenant's limit as of now
        job.retention_s = retry_retention_s(parent.retention_s, self.settings, parent.tenant)
        return self._record_and_send(job, batches_of(failed, self.receive_batch))

    def _record_and_send(self, job: JobSpec, batches: Iterator[list[Item]]) -> str:
        """The one way a job is recorded and sent, whichever door it came in by (SDK, CLI,
        REST and its uploads and events, `sluice enrich`, a retry): its job and chunk rows
        first, then one message per chunk on the job's fair-share lane. One batch is one
        transaction (Ledger.create_job); more are written while the job is `receiving`, and
        its chunks are sent only after the last batch commits (storage/receiving.py)."""
        require_broker(self.endpoints)  # a job nothing can ever send is not worth recording
        spec = self.catalog.get(job.task)
        chunk_size = chunk_size_for(spec, job, self.settings.chunk_size)
        ahead = list(islice(batches, 2))
        if len(ahead) < 2:
            job_id, chunk_ids = self.ledger.create_job(job, ahead[0] if ahead else [], chunk_size)
            self._send(job_id, chunk_ids, spec.queue, job.priority)
            return job_id
        receiving = self.ledger.receiver.open(job, chunk_size)
        try:
            for batch in chain(ahead, batches):
                receiving.write(batch)
            receiving.finish()
        except BaseException:  # a bad row, a repeated key, a quota, Ctrl-C: nothing stays
            receiving.abandon()
            raise
        self._send(
            receiving.job_id,
            self.ledger.receiver.chunk_ids(receiving.job_id),
            spec.queue,
            job.priority,
        )
        return receiving.job_id

    def _send(self, job_id: str, chunk_ids: Iterable[str], queue: str, priority: int) -> None:
        try:
            lane = self.ledger.job(job_id).lane
            self.dispatcher.send_job_chunks(chunk_ids, queue, lane, priority)
        except Exception as exc:  # kombu raises several types for an unreachable broker
            raise NotQueuedError("job", job_id, exc) from exc

    # -- training -----------------------------------------------------------------------------

    def submit_training(
        self,
        *,
        task: str,
        name: str,
        data: str | Path,
        label_column: str,
        tenant: str = DEFAULT_TENANT,
        **options: Any,
    ) -> str:
        """Check a training request and queue it on `sluice.train`; returns the run id.
        Options: data_url (then `data` is a table), labels, base, epochs (the most; by
        default chosen by early stopping), early_stopping (False: every epoch), workers,
        gpus_per_worker, batch_size, learning_rate, train_encoder, dp_epsilon, dp_delta,
        text_column, media_column, key_column, feature_columns, seed, holdout_fraction."""
        check_tenant(tenant)
        spec = build_spec(
            self.settings,
            lambda ref, t: self.resolve_model(ref, t, tenant),
            task=task,
            name=name,
            data=str(data),
            label_column=label_column,
            **options,
        )
        require_broker(self.endpoints)  # after the checks: a bad request fails the same anyway
        known = self.registry.list(spec.name, tenant)
        if known and known[0].task != spec.task:
            raise SluiceError(
                f"model name {spec.name!r} is taken by a {known[0].task} model; "
                "choose another --name"
            )
        run_id = self.runs.create(spec.model_dump(), spec.name, spec.task, tenant=tenant)
        try:
            self.dispatcher.send_training(run_id)
        except Exception as exc:  # kombu raises several types for an unreachable broker
            raise NotQueuedError("training run", run_id, exc) from exc
        return run_id

    def training_run(self, run_id: str) -> RunView:
        return self.runs.get(run_id)

    def wait_training(
        self,
        run_id: str,
        timeout: float | None = None,
        poll: float = 0.5,
        on_progress: Callable[[RunView], None] | None = None,
    ) -> RunView:
        """Block until the run has ended; call on_progress whenever its progress moves."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: tuple[Any, ...] | None = None
        while True:
            run = self.runs.get(run_id)
            now = (run.status, run.progress.get("epoch"), run.attempts)
            if on_progress and now != last:
                on_progress(run)
            last = now
            if RunStatus(run.status).finished:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"training run {run_id} still {run.status} after {timeout}s")
            time.sleep(poll)

    # -- following ----------------------------------------------------------------------------

    def status(self, job_id: str) -> JobView:
        return self.ledger.job(job_id)

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        poll: float = 0.25,
        on_progress: Callable[[JobView], None] | None = None,
    ) -> JobView:
        """Block until the job has finished; call on_progress with each new state. The job
        is read again after 20 ms, then ever less often, up to every `poll` seconds: a short
        job (a re-run from the result cache, an event) is seen done within milliseconds,
        and a long one costs the ledger a read per `poll`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        pause = min(FIRST_POLL_S, poll)
        while True:
            view = self.ledger.job(job_id)
            if on_progress and (
                last is None or view.counts != last.counts or view.status != last.status
            ):
                on_progress(view)
            last = view
            if view.status.finished:
                return view
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} still {view.status} after {timeout}s "
                    f"({view.counts.processed}/{view.counts.total} items)"
                )
            time.sleep(pause)
            pause = min(pause * 1.5, poll)

    def cancel(self, job_id: str) -> JobView:
        return self.ledger.cancel(job_id)

    @property
    def erasure(self) -> Erasure:
        return Erasure(self.ledger.engine, self.store.stamp_if_present, self.store.remove)

    def purge(self, job_id: str, tenant: str | None = None, by: str = "sdk") -> Erased:
        """Remove a finished job and everything of it: items, results, explanations,
        callbacks, cache entries, and the exports Sluice stored (storage/erasure.py);
        recorded in the erasure audit. Refused while it runs (PurgeRefusedError)."""
        return self.erasure.purge(job_id, tenant, by)

    def purge_older_than(self, age: str, tenant: str | None = None, by: str = "sdk") -> Erased:
        """Purge every finished job created longer ago than `age` ("30d", "12h")."""
        before = host_now() - timedelta(seconds=parse_duration(age))
        return self.erasure.purge_older_than(before, tenant, by)

    def forget(self, key: str, tenant: str | None = None, by: str = "sdk") -> Erased:
        """Remove every row keyed `key` from `tenant`'s jobs (default: the operator's), as it
        was given or as redaction stored it (a hashed key), with the cache entries and
        stored exports of those jobs; audited under the key's keyed digest."""
        owner = tenant or DEFAULT_TENANT
        hashed = stored_key(self.ledger.engine, key, owner)
        return self.erasure.forget(owner, key, [hashed], by)

    def results(self, job_id: str) -> Iterator[dict[str, Any]]:
        self.ledger.job(job_id)  # a clear error for an unknown id
        return self.ledger.iter_results(job_id)

    def lineage(self, job_id: str, key: str, tenant: str | None = None) -> dict[str, Any]:
        """What made row `key` of job `job_id` (storage/lineage.py): its input's keyed
        digest, the model and its weights' digest, Sluice's version, the explainer and its
        steps, the redaction applied, the model's DP budget. `tenant`: only its jobs."""
        return row_lineage(self.ledger.engine, job_id, key, tenant)

    def export(self, job_id: str, fmt: str, out: IO[str] | str | Path) -> int:
        """Write the results as jsonl, csv or parquet (parquet needs a path), each row with
        its lineage (storage/lineage.py)."""
        if isinstance(out, str) and is_object_uri(out):
            return self._export_to_object(job_id, fmt, normalised_uri(out))
        self.ledger.job(job_id)  # a clear error for an unknown id
        rows = self.ledger.iter_results(job_id, lineage=True)  # an export carries lineage
        if fmt == "parquet":
            if not isinstance(out, str | Path):
                raise SluiceError("parquet output needs a file: pass -o FILE")
            return export.write_parquet(rows, str(out))
        if isinstance(out, str | Path):
            with open(out, "w", encoding="utf-8", newline="") as fh:
                return self.export(job_id, fmt, fh)
        if fmt == "jsonl":
            return export.write_jsonl(rows, out)
        if fmt == "csv":
            return export.write_csv(rows, out)
        raise SluiceError(f"unknown format {fmt!r}; use one of {', '.join(export.FORMATS)}")

    def _export_to_object(self, job_id: str, fmt: str, uri: str) -> int:
        """Written to a local file first, then put as one object: a reader of `uri` never
        sees half an export."""
        if fmt not in export.FORMATS:
            raise SluiceError(f"unknown format {fmt!r}; use one of {', '.join(export.FORMATS)}")
        with tempfile.TemporaryDirectory(prefix="sluice-export-") as scratch:
            local = Path(scratch) / f"results.{fmt}"
            n = self.export(job_id, fmt, local)
            self.store.put_file(local, uri)
        # recorded, so that a purge or the job's retention removes it too (erasure.py)
        self.ledger.record_export(job_id, uri, self.store.info(uri).stamp)
        return n
