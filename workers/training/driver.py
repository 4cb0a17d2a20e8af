"""One training run, driven from a Celery worker: read and check the data, prepare it, run
Ray Train's TorchTrainer, then register the model it made."""

import hashlib
import json
import logging
import socket
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from schemas.catalog import load_catalog
from schemas.errors import LeaseLost, TrainingError
from schemas.object_refs import is_object_uri
from schemas.settings import Settings
from schemas.stack import Endpoints
from schemas.training import TrainSpec
from storage.model_artifacts import join, publish, remove
from storage.object_store import ObjectStore
from storage.registry import ModelVersionView, Registry
from storage.row_sources import fingerprint, read_all_rows, read_table
from storage.training_runs import RunView, TrainingRuns
from workers.media_decoding import use_object_store
from workers.training.loop import FINAL_METRICS, local_base, train_loop
from workers.training.plan import plan_for
from workers.training.recipes import recipe_for

log = logging.getLogger("sluice.train")


def load_rows(spec: TrainSpec, settings: Settings) -> list[dict[str, Any]]:
    """The training rows again, checked against the fingerprint taken at submit."""
    if spec.data.file:
        location = spec.data.file
        if not is_object_uri(location) and not Path(location).is_file():
            raise TrainingError(
                f"the training data {location} cannot be read on host {socket.gethostname()}: "
                "no such file here. Put it in the object store (s3://...) or on a path every "
                "worker host has"
            )
        _, rows = read_all_rows(location, ObjectStore(settings.storage_options))
    else:
        assert spec.data.url and spec.data.table
        _, table_rows = read_table(spec.data.url, spec.data.table)
        rows = list(table_rows)
    columns = spec.used_columns()
    kept = [{c: row.get(c) for c in columns} for row in rows]
    if fingerprint(kept, columns) != spec.data_fingerprint:
        raise TrainingError(
            f"the training data at {spec.data.describe()} changed after the "
            "run was submitted; submit the training again"
        )
    return kept


def scaling(spec: TrainSpec, settings: Settings) -> Any:
    """Workers, CPUs and GPUs: GPUs whenever the cluster has them, unless told 0."""
    import ray
    from ray.train import ScalingConfig

    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0)
    per_worker = (
        spec.gpus_per_worker if spec.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    )
    if per_worker and not gpus:
        raise TrainingError(
            f"--gpus-per-worker {per_worker:g} asked for, but the Ray cluster "
            "has no GPUs; drop the option to train on CPUs"
        )
    cpus = settings.train_cpus_per_worker
    if spec.workers * cpus > resources.get("CPU", 0) or spec.workers * per_worker > gpus:
        raise TrainingError(
            f"{spec.workers} workers need {spec.workers * cpus:g} CPUs and "
            f"{spec.workers * per_worker:g} GPUs; the Ray cluster has "
            f"{resources.get('CPU', 0):g} CPUs and {gpus:g} GPUs. Use fewer --workers or "
            "lower SLUICE_TRAIN_CPUS_PER_WORKER"
        )
    return ScalingConfig(
        num_workers=spec.workers,
        use_gpu=per_worker > 0,
        resources_per_worker={"CPU": cpus, "GPU": per_worker},
    )


def run_training(
    run: RunView,
    settings: Settings,
    endpoints: Endpoints,
    runs: TrainingRuns,
    registry: Registry,
    owner: str,
) -> ModelVersionView:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from workers.runtime import actor_directory as actors

    store = ObjectStore(settings.storage_options)
    spec = local_base(TrainSpec.model_validate(run.spec), settings.model_cache_dir(), store)
    done = [v for v in registry.list(spec.name) if v.training_run_id == run.id]
    if done:  # registered before its worker died, not yet marked finished
        return done[0]
    rows = load_rows(spec, settings)
    recipe = recipe_for(spec)
    use_object_store(store)  # media the data names by s3://
    try:
        prepared = recipe.prepare(spec, rows, settings.media_limits())
    except (ValueError, KeyError) as exc:
        raise TrainingError(f"cannot prepare the training data: {exc}") from exc
    plan = plan_for(spec, recipe, prepared)
    log.info("run %s: %s", run.id, plan)
    actors.connect(
        endpoints.ray_address,
        endpoints.ray_auth_token_path,
        actors.outside_code(load_catalog(settings.task_modules)),
    )
    location = settings.training_location()
    run_dir = join(location, run.id)
    output = join(run_dir, "model")
    remove(output, store)
    # Checkpoints in a bucket: Ray Train writes them through the same fsspec filesystem the
    # rest of Sluice uses (one set of SLUICE_STORAGE_OPTIONS), as a pyarrow filesystem.
    storage_fs, storage_path = (
        store.arrow_filesystem(location) if is_object_uri(location) else (None, location)
    )
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "spec": plan.applied(spec).model_dump(),
            "patience": plan.patience,
            "data": ray.put(prepared),
            "run_id": run.id,
            "owner": owner,
            "database_url": endpoints.database_url,
            "output_dir": output,
            "storage_options": settings.storage_options,
            "base": run.spec.get("base"),  # an s3:// base: each rank's host copies it
            "model_cache_dir": str(settings.model_cache_dir()),
            "checkpoint_seconds": settings.train_checkpoint_seconds,
        },
        scaling_config=scaling(spec, settings),
        # The same name and storage path on a retry: Ray Train resumes from the newest
        # checkpoint there, so a run whose worker died does not start again from zero.
        run_config=RunConfig(
            name=run.id,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=settings.train_max_failures),
        ),
    )
    trainer.fit()
    if runs.is_cancelled(run.id):
        raise TrainingError("cancelled")
    if not runs.holds(run.id, owner):
        raise LeaseLost(run.id)
    with tempfile.TemporaryDirectory(prefix="sluice-model-") as scratch:
        local = Path(output)
        if is_object_uri(output):  # written by rank 0 on whichever host it ran
            local = Path(scratch) / "model"
            store.download_dir(output, local)
        version = register(local, run, spec, settings, registry, store)
    # the version is in the model store now: its checkpoints are of no further use
    remove(run_dir, store)
    return version


def register(
    output: Path,
    run: RunView,
    spec: TrainSpec,
    settings: Settings,
    registry: Registry,
    store: ObjectStore,
) -> ModelVersionView:
    """Put the model into the store (a directory or prefix per run attempt) and record it as
    the name's next version."""
    final = json.loads((output / FINAL_METRICS).read_text())
    (output / FINAL_METRICS).unlink()
    sha256 = weights_sha256(output)
    # one location per attempt: an attempt never deletes what another registered
    target = join(settings.model_store_location(), spec.name, f"{run.id}.{run.attempts}")
    target = publish(output, target, store)
    try:
        view = registry.register(
            spec.name,
            spec.task,
            uri=target,
            sha256=sha256,
            metrics=final["metrics"],
            training_run_id=run.id,
            data_fingerprint=spec.data_fingerprint,
            dp=final.get("dp"),
            tenant=run.tenant,
        )
    except IntegrityError:  # another attempt of this run registered first (unique run id)
        remove(target, store)
        done = [v for v in registry.list(spec.name) if v.training_run_id == run.id]
        if not done:
            raise
        return done[0]
    log.info("run %s: registered %s (%s)", run.id, view.ref, final["metrics"])
    return view


def weights_sha256(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")):
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()
