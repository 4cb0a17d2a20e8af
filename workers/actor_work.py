"""Running a chunk's items on the model actors: the shared actor of its model, and a private
one when the shared actor died during the call (workers/isolation.py)."""

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from ray.exceptions import RayActorError

from schemas.errors import (
    IsolationUnfinished,
    ModelChangedError,
    ModelError,
    ModelLocationError,
    WorkCancelled,
)
from schemas.explainer_settings import EXPLAINER_PARAM, explainer_of
from schemas.jobs import Item, Outcome
from schemas.settings import Settings
from schemas.task_spec import TaskSpec
from storage.ledger import JobView
from workers.isolation import ISOLATING, isolate
from workers.media_decoding import job_limits, limits_to_json
from workers.ray_calls import ActorCalls

log = logging.getLogger("sluice.worker")


def wait_until_ready(actor: Any, calls: ActorCalls) -> int:
    """The actor's process id, once it answers (after a death it restarts and reloads its
    model: calls meanwhile fail as unavailable). Its model failing to load raises."""
    while True:
        try:
            return int(calls.get(actor.stats.remote())["pid"])
        except RayActorError as exc:
            if exc.actor_init_failed:
                raise load_failure(exc) from None
        time.sleep(0.25)  # restarting: Ray has no event to await for it


# The last "module.Class: message" line of the traceback Ray hands back.
FINAL_ERROR = re.compile(r"^(?:\w+\.)*(\w+(?:Error|Exception)): (.+)$", re.MULTILINE)


def load_failure(exc: RayActorError) -> ModelError:
    """What made the model actor fail to start, as its own error (a model location this host
    cannot read names it and the host) rather than Ray's wrapper and traceback."""
    found = FINAL_ERROR.findall(str(exc))
    if not found:
        return ModelError(f"the model actor could not start: {exc}"[:2000])
    kind, message = found[-1]
    for known in (ModelChangedError, ModelLocationError):
        if kind == known.__name__:
            return known(message)
    return ModelError(f"the model could not be loaded: {kind}: {message}"[:2000])


def run_chunk(
    settings: Settings,
    spec: TaskSpec,
    job: JobView,
    chunk_id: str,
    items: list[Item],
    calls: ActorCalls,
    isolate_first: bool,
) -> list[Outcome]:
    """Outcomes in order. `isolate_first`: an earlier attempt was isolating this chunk's
    culprit; the shared actor is not given it again."""
    from workers.runtime import actor_directory as actors

    model_path = job.params.get("model_path", "")
    # the job's explainer as it recorded it (one recorded before jobs chose: this worker's)
    params = {**job.params, EXPLAINER_PARAM: explainer_of(job.params, spec, settings)}
    # The worker's own limits travel with each chunk: the actor checks every media
    # reference against them again, whatever the producer accepted.
    # An API tenant's job reads under its own roots (those within this worker's).
    media_limits = limits_to_json(job_limits(settings, job.params))

    def runner(actor: Any) -> Callable[[list[Item]], list[Outcome]]:
        def run(part: list[Item]) -> list[Outcome]:
            raw = [i.model_dump(exclude_none=True) for i in part]
            call = actor.process.remote(job.id, raw, params, job.explain_policy, media_limits)
            got = calls.get(call)
            return [Outcome.model_validate(r) for r in got]

        return run

    if not isolate_first:
        replica = actors.replica_for(chunk_id, settings.replicas)
        shared = actors.get_actor(spec, job.model, model_path, job.model_version, replica, settings)
        while True:
            before = wait_until_ready(shared, calls)
            try:
                return runner(shared)(items)
            except RayActorError as exc:
                if exc.actor_init_failed:
                    raise load_failure(exc) from None
                if wait_until_ready(shared, calls) != before:
                    break  # its process died during the call: this chunk's item, or another's
        log.warning("chunk %s: its model actor died during the call; isolating the cause", chunk_id)
    calls.isolated = True
    private = actors.private_actor(
        spec, model_path, job.model_version, f"sluice-isolate:{uuid.uuid4().hex}", settings
    )
    try:
        return isolate(runner(private), lambda: wait_until_ready(private, calls), items)
    except WorkCancelled:
        raise
    except Exception as exc:
        raise IsolationUnfinished(f"{ISOLATING}: {type(exc).__name__}: {exc}") from exc
    finally:
        import ray

        ray.kill(private, no_restart=True)
