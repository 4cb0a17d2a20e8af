"""The model actor: one per (task, model version, replica), a thin Ray shell around
ModelCore (workers/runtime/model_core.py), which does the work. The shell finds the device
Ray gave it, leaves when idle, and turns the JSON that crosses the Ray boundary into typed
values and back. It is given the handler's dotted path from the catalog, so a task
registered from outside needs no catalog in Ray's workers."""

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from schemas.jobs import ExplainPolicy, Item
from storage.model_artifacts import ModelCache
from storage.object_store import ObjectStore
from workers.handlers import make_handler
from workers.media_decoding import limits_from, limits_from_json, use_object_store
from workers.runtime.devices import pick_device
from workers.runtime.model_core import ModelCore
from workers.runtime.options import ActorOptions


class ModelActor:
    def __init__(
        self,
        handler_path: str,
        explain_method: str,
        model_path: str,
        options: dict[str, Any],
        model_digest: str = "",
    ) -> None:
        import ray
        import torch

        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no bars in worker logs
        self.options = ActorOptions.model_validate(options)
        # Ray pins OMP threads to the actor's num_cpus; the model should use what it is given.
        torch.set_num_threads(self.options.torch_threads or os.cpu_count() or 1)
        handler = make_handler(handler_path, explain_method)
        store = ObjectStore(self.options.storage_options)
        use_object_store(store)
        if model_path:  # a local directory, or an object-store copy checked against the digest
            cache = ModelCache(Path(self.options.model_cache_dir), store)
            model_path = str(cache.materialise(model_path, model_digest))
        self.core = ModelCore.load(
            handler, model_path, pick_device(ray.get_gpu_ids()), self.options
        )
        self.last_used = time.monotonic()
        self.in_flight = 0
        self._reaper: asyncio.Task[None] | None = None

    def _watch_idleness(self) -> None:
        idle_after = self.options.idle_seconds
        if idle_after > 0 and self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(
                self._retire_when_idle(idle_after)
            )

    async def _retire_when_idle(self, idle_after: float) -> None:
        """Leave the cluster after `idle_after` seconds without work, freeing the GPU (or
        memory) for other models; the next chunk that needs this model starts it again."""
        import ray

        while True:
            await asyncio.sleep(min(idle_after / 4, 30))
            if self.in_flight == 0 and time.monotonic() - self.last_used > idle_after:
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return

    async def process(
        self,
        job_id: str,
        items: list[dict[str, Any]],
        params: dict[str, Any],
        policy: str,
        media_limits: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Outcomes for a chunk's items, as JSON-able dicts, in order (ModelCore.process).
        `media_limits`: the worker's MediaLimits in their JSON form; none given, those in
        `params` (where workers before protocol 2 put them), else no file is read."""
        self._watch_idleness()
        self.in_flight += 1
        try:
            outcomes = await self.core.process(
                job_id,
                [Item.model_validate(raw) for raw in items],
                params,
                ExplainPolicy.parse(policy),
                limits_from_json(media_limits) if media_limits else limits_from(params),
            )
            return [o.model_dump(mode="json") for o in outcomes]
        finally:
            self.in_flight -= 1
            self.last_used = time.monotonic()

    def stats(self) -> dict[str, Any]:
        return {**self.core.stats(), "pid": os.getpid()}
