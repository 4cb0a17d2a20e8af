"""What the model actor does with a chunk, without Ray: preprocess each item, predict in
batches shared with concurrent chunks, explain the items the job's policy picks. Every
failure stays on its item: bad input ends `invalid`, a failed prediction or an output no
database can hold ends `error`, a failed explanation is recorded and the prediction stands.
The Ray actor (workers/runtime/actor.py) finds the device and forwards calls here."""

import asyncio
import re
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError

from schemas.errors import InvalidInput
from schemas.explainer_settings import EXPLAINER_PARAM
from schemas.jobs import ExplainPolicy, Explanation, Item, Outcome
from schemas.media_refs import MediaLimits
from schemas.states import ExplanationStatus, ItemStatus
from schemas.storable import storable_outcome
from schemas.task_spec import ExplainerSpec
from workers.handlers.base import Handler
from workers.media_decoding import MEDIA_LIMITS
from workers.runtime.batching import DynamicBatcher
from workers.runtime.devices import resolve_dtype
from workers.runtime.options import ActorOptions

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


class ModelCore:
    """A loaded handler on `device` and the batching in front of it. `process` is a
    coroutine: calls from concurrent chunks share model batches when run in one event loop."""

    def __init__(
        self, handler: Handler, device: str, options: ActorOptions, load_seconds: float = 0.0
    ) -> None:
        self.handler = handler
        self.device = device
        self.options = options
        self.load_seconds = load_seconds
        # One model thread: the model runs one batch at a time.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        # Preprocessing (tokenising) runs on its own thread beside a GPU, which then never
        # waits for the CPU's part. On the CPU it runs on the model's thread: the cores are
        # the model's there, and a second busy thread made torch's threads wait for the core
        # it took (measured: no gain on 2 cores). Only for handlers that allow it.
        self.preprocess_executor = (
            ThreadPoolExecutor(1, thread_name_prefix="preprocess")
            if getattr(handler, "preprocess_off_model_thread", False) and device != "cpu"
            else self.executor
        )
        self.batcher = DynamicBatcher(
            handler.predict,
            options.max_batch_size,
            options.max_batch_wait_s,
            self.executor,
            max_tokens=options.max_batch_tokens,
            size=self._size,
        )
        self.items_done = 0

    @classmethod
    def load(
        cls, handler: Handler, model_path: str, device: str, options: ActorOptions
    ) -> "ModelCore":
        """The handler's model loaded onto `device` (timed, for stats)."""
        started = time.perf_counter()
        handler.inference_dtype = resolve_dtype(options.inference_dtype, device)
        handler.setup(model_path, device)
        return cls(handler, device, options, time.perf_counter() - started)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.preprocess_executor.shutdown(wait=False, cancel_futures=True)

    async def process(
        self,
        job_id: str,
        items: list[Item],
        params: Mapping[str, Any],
        policy: ExplainPolicy,
        limits: MediaLimits,
    ) -> list[Outcome]:
        """Outcomes for a chunk's items, in order. The handler reads media under `limits`.

        Raises when every prediction of several failed, or one failed on the device: that
        smells of the model or the device (out of memory, a lost GPU), not of the items, so
        the chunk is retried rather than recorded. One item that fails alone (an event is
        a one-item chunk) fails as that item's error, at once.
        """
        loop = asyncio.get_running_loop()
        handler_params = {**params, MEDIA_LIMITS: limits}
        outcomes, features, positions = await loop.run_in_executor(
            self.preprocess_executor, self._preprocess, items, handler_params
        )
        predictions = await self._predict_by_size(features)
        # an output the handler refused (InvalidInput: not the JSON asked for) is that
        # item's; the model is judged on the predictions that ran
        ran = [p for p in predictions if not isinstance(p, InvalidInput)]
        failures = [p for p in ran if isinstance(p, BaseException)]
        if failures and len(failures) == len(ran) and model_at_fault(failures):
            raise RuntimeError(
                f"all {len(failures)} predictions failed: "
                f"{type(failures[0]).__name__}: {failures[0]}"
            )
        for n, prediction in zip(positions, predictions, strict=True):
            outcomes[n] = predicted(items[n].key, prediction)
        await self._explain(job_id, policy, explain_steps(params), features, positions, outcomes)
        self.items_done += len(items)
        return [o for o in outcomes if o is not None]  # every position is filled by now

    def _size(self, features: Any) -> int:
        """The handler's size of an input (Handler.size); 1 from a handler without one, or
        whose size() fails (the input then runs in any batch; its prediction tells)."""
        size = getattr(self.handler, "size", None)
        try:
            return max(1, int(size(features))) if size is not None else 1
        except Exception:
            return 1

    async def _predict_by_size(self, features: list[Any]) -> list[Any]:
        """Predictions in the order of `features`, which enter the batcher shortest first:
        batches of inputs of similar size, padded little (a chunk of short messages in input
        order ran 16% slower than sorted)."""
        sizes = [self._size(f) for f in features]
        order = sorted(range(len(features)), key=sizes.__getitem__)
        done = await self.batcher.submit([features[i] for i in order])
        predictions: list[Any] = [None] * len(features)
        for i, prediction in zip(order, done, strict=True):
            predictions[i] = prediction
        return predictions

    def _preprocess(
        self, items: list[Item], params: dict[str, Any]
    ) -> tuple[list[Outcome | None], list[Any], list[int]]:
        outcomes: list[Outcome | None] = [None] * len(items)
        features, positions = [], []
        for n, item in enumerate(items):
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
        steps: int,
        features: list[Any],
        positions: list[int],
        outcomes: list[Outcome | None],
    ) -> None:
        if policy.kind == "none":
            return
        chosen: list[tuple[Any, int, Outcome]] = []
        for f, n in zip(features, positions, strict=True):
            o = outcomes[n]
            if o is not None and self._wants(policy, job_id, o):
                chosen.append((f, n, o))
        size = self.options.explain_batch_size
        loop = asyncio.get_running_loop()
        for start in range(0, len(chosen), size):
            part = chosen[start : start + size]
            explanations = await loop.run_in_executor(
                self.executor,
                self._explain_batch,
                steps,
                [f for f, _, _ in part],
                [o.output or {} for _, _, o in part],
            )
            for (_, n, o), explanation in zip(part, explanations, strict=True):
                # an explanation no database can hold becomes a failed one; the output stands
                outcomes[n] = storable_outcome(o.model_copy(update={"explanation": explanation}))

    def _explain_batch(
        self, steps: int, features: list[Any], outputs: list[dict[str, Any]]
    ) -> list[Explanation]:
        try:
            explanations = self.handler.explain(
                features, outputs, steps, self.options.explain_batch_size
            )
            if len(explanations) != len(features):
                raise RuntimeError(f"{len(explanations)} explanations for {len(features)} items")
            return explanations
        except Exception as exc:  # the predictions stand; the failure is recorded
            err = f"{type(exc).__name__}: {exc}"[:500]
            return [
                Explanation(
                    method=self.handler.explain_method, status=ExplanationStatus.FAILED, error=err
                )
                for _ in features
            ]

    def stats(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "load_seconds": round(self.load_seconds, 3),
            "items": self.items_done,
            "batch_sizes": dict(self.batcher.batch_sizes),
            "dtype": getattr(self.handler, "inference_dtype", "float32"),
            **self.batcher.fill(),
        }


def explain_steps(params: Mapping[str, Any]) -> int:
    """The job's explainer steps (the worker records them on every chunk's call:
    schemas/explainer_settings.py); the catalog's default where a caller gave none."""
    explainer = params.get(EXPLAINER_PARAM) or {}
    return int(explainer.get("steps") or ExplainerSpec.steps)


def predicted(key: str, prediction: Any) -> Outcome:
    """The outcome of one item's prediction: its output if a database can hold it (no NaN,
    no infinity), else the item's error. An output the handler refused is `invalid`."""
    if isinstance(prediction, InvalidInput):
        return Outcome(key=key, status=ItemStatus.INVALID, error=str(prediction))
    if isinstance(prediction, BaseException):
        return Outcome(
            key=key,
            status=ItemStatus.ERROR,
            error=f"prediction failed: {type(prediction).__name__}: {prediction}",
        )
    try:
        outcome = Outcome(key=key, status=ItemStatus.OK, output=prediction)
    except ValidationError:
        return Outcome(
            key=key,
            status=ItemStatus.ERROR,
            error=f"the model's output is a {type(prediction).__name__}, not a JSON object",
        )
    return storable_outcome(outcome)
