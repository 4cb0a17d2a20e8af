"""Finding or creating the named Ray actor for (task, model version, replica)."""

import importlib
import logging
import os
import re
import threading
import zlib
from pathlib import Path
from typing import Any

import ray

from schemas.catalog import OWN_PACKAGES, Catalog
from schemas.settings import Settings
from schemas.task_spec import TaskSpec, split_path
from workers.runtime.actor import ModelActor
from workers.runtime.options import actor_options, output_tag

NAMESPACE = "sluice"
_connect_lock = threading.Lock()
RemoteModelActor = ray.remote(ModelActor)


def connect(
    address: str | None, auth_token_path: Path | None = None, code: list[str] | None = None
) -> None:
    """Join the Ray cluster once per process (a Celery child, a test, the benchmark).
    `code`: directories of packages from outside Sluice (tasks registered from elsewhere)
    that Ray ships to its workers with this job (`py_modules`), so that their handlers and
    recipes import there without sharing this process's PYTHONPATH, or its host."""
    with _connect_lock:
        if auth_token_path is not None:
            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ["RAY_AUTH_TOKEN_PATH"] = str(auth_token_path)
            # Ray read its config when imported; make it see token mode (as ray.init does
            # when it enables tokens itself).
            from ray._raylet import Config  # type: ignore[attr-defined]

            Config.initialize("")
        if not ray.is_initialized():
            # no address: a private local instance, never whichever cluster this machine
            # started last (what Ray's address=None would join)
            ray.init(
                address=address or "local",
                namespace=NAMESPACE,
                log_to_driver=False,
                logging_level=logging.WARNING,
                include_dashboard=False if address is None else None,
                runtime_env={"py_modules": code} if code else None,
            )


# What ModelActor.process takes. Actors are detached and outlive worker restarts, so a worker
# of new code must never call an actor of old code (or the reverse) during a rolling upgrade:
# bump this whenever process()'s arguments or the outcomes' shape change.
ACTOR_PROTOCOL = 3


def actor_name(task: str, model: str, version: str, replica: int, options_tag: str) -> str:
    """`sluice:v<protocol>:<task>:<model>:<version>:<options>:<replica>`; the model part is
    for people (the last part of a path or hub id), the version (a content digest) is what
    tells models apart, the protocol keeps workers and actors of different code apart, the
    options tag (options.output_tag) those started with options that change outputs."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model).name or model)[-48:]
    return f"sluice:v{ACTOR_PROTOCOL}:{task}:{label}:{version}:{options_tag}:{replica}"


def shared_actor_name(
    spec: TaskSpec, model: str, version: str, replica: int, settings: Settings
) -> str:
    """The name of the shared actor a worker with `settings` uses for `spec`'s model."""
    tag = output_tag(actor_options(settings, spec))
    return actor_name(spec.name, model, version, replica, tag)


def replica_for(chunk_id: str, replicas: int) -> int:
    return zlib.crc32(chunk_id.encode()) % replicas


def outside_code(catalog: Catalog) -> list[str]:
    """The directories (or files) of the top-level packages outside Sluice that the
    catalog's handlers and recipes live in: what `connect` ships to Ray's workers."""
    found: dict[str, str] = {}
    for spec in catalog:
        for path in [spec.handler, *([spec.training.recipe] if spec.training else [])]:
            top = split_path(path)[0].split(".")[0]
            if top in OWN_PACKAGES or top in found:
                continue
            module = importlib.import_module(top)
            paths = getattr(module, "__path__", None)
            found[top] = str(next(iter(paths)) if paths else module.__file__)
    return sorted(found.values())


def cluster_has_gpu() -> bool:
    """Whether the cluster has GPUs: shared model actors then ask for one."""
    return bool(ray.cluster_resources().get("GPU", 0) > 0)


def get_actor(
    spec: TaskSpec, model: str, model_path: str, version: str, replica: int, settings: Settings
) -> Any:
    """The live actor, created on first use. Detached, so models stay warm across workers;
    restarted by Ray if its process dies."""
    name = shared_actor_name(spec, model, version, replica, settings)
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        pass
    has_gpu = cluster_has_gpu()
    return RemoteModelActor.options(  # type: ignore[attr-defined]
        name=name,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        # A task whose actor died is not run again by Ray: the worker finds out whether one
        # of its items killed it (workers/isolation.py) instead of killing it a second time.
        max_task_retries=0,
        num_cpus=settings.actor_num_cpus,
        num_gpus=settings.gpu_fraction if has_gpu else 0,
    ).remote(
        spec.handler,
        spec.explainer.method if spec.explainer else "none",
        model_path,
        actor_options(settings, spec).model_dump(mode="json"),
        version,
    )


def private_actor(
    spec: TaskSpec, model_path: str, version: str, name: str, settings: Settings
) -> Any:
    """An actor for one worker's use only (isolating an item that kills its process): not
    detached (it goes with the worker), restarted after each death, never retrying a task,
    and on the CPU, so it can always be placed beside the shared actor that holds the GPU
    (in float32 where the shared one runs in float16, which CPUs lack)."""
    options = actor_options(settings, spec)
    if options.inference_dtype == "float16":
        options = options.model_copy(update={"inference_dtype": "float32"})
    return RemoteModelActor.options(  # type: ignore[attr-defined]
        name=name,
        namespace=NAMESPACE,
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=0,
        num_cpus=settings.actor_num_cpus,
        num_gpus=0,
    ).remote(
        spec.handler,
        spec.explainer.method if spec.explainer else "none",
        model_path,
        options.model_dump(mode="json"),
        version,
    )
