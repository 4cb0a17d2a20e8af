"""The model actor: one per (task, model version, replica). Owns the device, batching and
explanations; the handler inside it knows nothing of Ray. It is given the handler's dotted
path from the catalog, so a task registered from outside needs no catalog in Ray's workers."""

import asyncio
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from schemas.errors import InvalidInput
from schemas.jobs import ExplainPolicy, Explanation, Item, Outcome
from schemas.states import ExplanationStatus, ItemStatus
from workers.handlers import make_handler
from workers.runtime.batching import DynamicBatcher


def pick_device(gpu_ids: list[Any]) -> str:
    import torch

    return "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"


DEVICE_WORDS = re.compile(r"\b(cuda|cudnn|hip|mps|xpu)\b|out of memory|device-side", re.IGNORECASE)


def model_at_fault(failures: list[BaseException]) -> bool:
    """Whether predictions that all failed point at the model or device, not the items:
    several items failing together, or a device error (out of memory, CUDA)."""
    import torch

    first = failures[0]
    out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    text = f"{type(first).__name__} {first}"
    device_error = isinstance(first, out_of_memory | MemoryError) or bool(DEVICE_WORDS.search(text))
    return len(failures) > 1 or device_error


class ModelActor:
    def __init__(
        self, handler_path: str, explain_method: str, model_path: str, options: dict[str, Any]
    ) -> None:
        import ray
        import torch

        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no bars in worker logs
        # Ray pins OMP threads to the actor's num_cpus; the model should use what it is given.
        torch.set_num_threads(int(options.get("torch_threads") or os.cpu_count() or 1))
        self.device = pick_device(ray.get_gpu_ids())
        self.handler = make_handler(handler_path, explain_method)
        started = time.perf_counter()
        self.handler.setup(model_path, self.device)
        self.load_seconds = time.perf_counter() - started
        self.options = options
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.batcher = DynamicBatcher(
            self.handler.predict,
            options["max_batch_size"],
            options["max_batch_wait_ms"] / 1000,
            self.executor,
        )
        self.items_done = 0
        self.last_used = time.monotonic()
        self.in_flight = 0
        self._reaper: asyncio.Task[None] | None = None

    def _watch_idleness(self) -> None:
        idle_after = float(self.options.get("idle_seconds") or 0)
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
        self, job_id: str, items: list[dict[str, Any]], params: dict[str, Any], policy: str
    ) -> list[dict[str, Any]]:
        """Outcomes for a chunk's items, as JSON-able dicts, in order.

        Raises when every prediction of several failed, or one failed on the device: that
        smells of the model or the device (out of memory, a lost GPU), not of the items, so
        the chunk is retried rather than recorded. One item that fails alone (an event is
        a one-item chunk) fails as that item's error, at once.
        """
        self._watch_idleness()
        self.in_flight += 1
        try:
            return await self._process(job_id, items, params, policy)
        finally:
            self.in_flight -= 1
            self.last_used = time.monotonic()

    async def _process(
        self, job_id: str, items: list[dict[str, Any]], params: dict[str, Any], policy: str
    ) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        # The model thread also tokenises: a fast tokenizer must not be used from two threads.
        outcomes, features, positions = await loop.run_in_executor(
            self.executor, self._preprocess, items, params
        )
        predictions = await self.batcher.submit(features)
        failures = [p for p in predictions if isinstance(p, BaseException)]
        if failures and len(failures) == len(predictions) and model_at_fault(failures):
            raise RuntimeError(
                f"all {len(failures)} predictions failed: "
                f"{type(failures[0]).__name__}: {failures[0]}"
            )
        for n, pred in zip(positions, predictions, strict=True):
            key = items[n]["key"]
            if isinstance(pred, BaseException):
                outcomes[n] = Outcome(
                    key=key,
                    status=ItemStatus.ERROR,
                    error=f"prediction failed: {type(pred).__name__}: {pred}",
                )
            else:
                outcomes[n] = Outcome(key=key, status=ItemStatus.OK, output=pred)
        await self._explain(job_id, ExplainPolicy.parse(policy), features, positions, outcomes)
        self.items_done += len(items)
        return [o.model_dump(mode="json") for o in outcomes if o is not None]

    def _preprocess(
        self, items: list[dict[str, Any]], params: dict[str, Any]
    ) -> tuple[list[Outcome | None], list[Any], list[int]]:
        outcomes: list[Outcome | None] = [None] * len(items)
        features, positions = [], []
        for n, raw in enumerate(items):
            item = Item.model_validate(raw)
            try:
                features.append(self.handler.preprocess(item, params))
                positions.append(n)
            except InvalidInput as exc:
                outcomes[n] = Outcome(key=item.key, status=ItemStatus.INVALID, error=str(exc))
            except Exception as exc:  # a handler bug on one item stays on that item
                outcomes[n] = Outcome(
                    key=item.key,
                    status=ItemStatus.ERROR,
                    error=f"preprocessing failed: {type(exc).__name__}: {exc}",
                )
        return outcomes, features, positions

    def _wants(self, policy: ExplainPolicy, job_id: str, o: Outcome) -> bool:
        if o.status != ItemStatus.OK or o.output is None:
            return False
        try:
            return policy.wants(job_id, o.key, self.handler.confidence(o.output))
        except Exception:  # no confidence for this output: explain it only under `all`
            return policy.kind == "all"

    async def _explain(
        self,
        job_id: str,
        policy: ExplainPolicy,
        features: list[Any],
        positions: list[int],
        outcomes: list[Outcome | None],
    ) -> None:
        if policy.kind == "none":
            return
        chosen = []
        for f, n in zip(features, positions, strict=True):
            o = outcomes[n]
            if o is not None and self._wants(policy, job_id, o):
                chosen.append((f, o))
        size = self.options["explain_batch_size"]
        loop = asyncio.get_running_loop()
        for start in range(0, len(chosen), size):
            part = chosen[start : start + size]
            explanations = await loop.run_in_executor(self.executor, self._explain_batch, part)
            for (_, o), e in zip(part, explanations, strict=True):
                o.explanation = e

    def _explain_batch(self, part: list[tuple[Any, Outcome]]) -> list[Explanation]:
        feats = [f for f, _ in part]
        outputs = [o.output or {} for _, o in part]
        try:
            explanations = self.handler.explain(
                feats, outputs, self.options["explain_steps"], self.options["explain_batch_size"]
            )
            if len(explanations) != len(part):
                raise RuntimeError(f"{len(explanations)} explanations for {len(part)} items")
            return explanations
        except Exception as exc:  # the predictions stand; the failure is recorded
            err = f"{type(exc).__name__}: {exc}"[:500]
            return [
                Explanation(
                    method=self.handler.explain_method, status=ExplanationStatus.FAILED, error=err
                )
                for _ in part
            ]

    def stats(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "load_seconds": round(self.load_seconds, 3),
            "items": self.items_done,
            "pid": os.getpid(),
            "batch_sizes": dict(self.batcher.batch_sizes),
        }
