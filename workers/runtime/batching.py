"""Dynamic batching: items from concurrent requests are merged into one model call."""

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any


@dataclass
class Pending:
    item: Any
    future: asyncio.Future[Any]
    size: int  # what the item costs the model when padded to it (tokens; 1 for fixed shapes)


class DynamicBatcher:
    """Collects items until `max_size` are waiting, or a batch padded to its largest item
    would hold more than `max_tokens` (`size(item)` each), or `max_wait_s` has passed since the
    first; then runs `run_batch` on them in `executor` (one model call at a time).

    Items run in the order they were submitted, so a caller that submits its items sorted by
    size (ModelCore does) gets batches of similar sizes: little padding, and with a token
    budget, many short texts per call but few long ones (memory stays bounded)."""

    def __init__(
        self,
        run_batch: Callable[[list[Any]], list[Any]],
        max_size: int,
        max_wait_s: float,
        executor: Executor,
        max_tokens: int | None = None,
        size: Callable[[Any], int] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.executor = executor
        self.max_tokens = max_tokens
        self.size = size or (lambda _item: 1)
        self.pending: deque[Pending] = deque()
        self.arrived = asyncio.Event()
        self.batch_sizes: Counter[int] = Counter()
        # For stats: real item sizes against what the batches were padded to.
        self.items_run = 0
        self.tokens_real = 0
        self.tokens_padded = 0
        self._loop_task: asyncio.Task[None] | None = None

    async def submit(self, items: list[Any]) -> list[Any]:
        """Results in order; an item whose prediction failed gets its exception in its place."""
        if self._loop_task is None or self._loop_task.done():
            self.arrived = asyncio.Event()  # bound to this event loop
            self._loop_task = asyncio.create_task(self._serve())
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, fut in zip(items, futures, strict=True):
            self.pending.append(Pending(item, fut, max(1, int(self.size(item)))))
        self.arrived.set()
        return await asyncio.gather(*futures, return_exceptions=True)

    def _take(self) -> tuple[list[Pending], bool]:
        """The next batch from the front of the queue, and whether it is full (by count or by
        padded size): a full batch runs at once, another waits for more items."""
        batch: list[Pending] = []
        largest = 0
        while self.pending and len(batch) < self.max_size:
            head = self.pending[0]
            if head.future.done():  # cancelled (ray.cancel on its chunk's call): not run
                self.pending.popleft()
                continue
            padded = max(largest, head.size) * (len(batch) + 1)
            if batch and self.max_tokens is not None and padded > self.max_tokens:
                return batch, True
            batch.append(self.pending.popleft())
            largest = max(largest, head.size)
        return batch, len(batch) >= self.max_size

    def _put_back(self, batch: list[Pending]) -> None:
        self.pending.extendleft(reversed(batch))

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.pending:
                self.arrived.clear()
                await self.arrived.wait()
            batch, full = self._take()
            deadline = loop.time() + self.max_wait_s
            while not full and (remaining := deadline - loop.time()) > 0:
                self._put_back(batch)  # more may come: take again with them
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), remaining)
                batch, full = self._take()
            if not batch:
                continue
            await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[Pending]) -> None:
        self.batch_sizes[len(batch)] += 1
        self.items_run += len(batch)
        self.tokens_real += sum(p.size for p in batch)
        self.tokens_padded += len(batch) * max(p.size for p in batch)
        items = [p.item for p in batch]
        try:
            results = await loop.run_in_executor(self.executor, self._run_isolated, items)
        except Exception as exc:  # never leave a caller waiting forever
            results = [exc] * len(batch)
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)

    def fill(self) -> dict[str, float]:
        """How full the batches were: `batch_fill`, items per batch over `max_size`, and
        `token_fill`, real tokens over the padded tokens the model was given (with the
        counts they come from, for differences between two readings)."""
        batches = sum(self.batch_sizes.values())
        real, padded = self.tokens_real, self.tokens_padded
        return {
            "batches": batches,
            "items_batched": self.items_run,
            "tokens_real": real,
            "tokens_padded": padded,
            "batch_fill": round(self.items_run / (batches * self.max_size), 4) if batches else 0.0,
            "token_fill": round(real / padded, 4) if padded else 0.0,
        }

    def _run_isolated(self, items: list[Any]) -> list[Any]:
        """Run the batch; if it fails, run item by item so one bad item fails alone."""
        try:
            outputs = self.run_batch(items)
        except Exception as exc:
            return [exc] if len(items) == 1 else [self._one(item) for item in items]
        if len(outputs) != len(items):
            bad = RuntimeError(f"handler returned {len(outputs)} outputs for {len(items)} items")
            return [bad] * len(items)
        return outputs

    def _one(self, item: Any) -> Any:
        try:
            return self.run_batch([item])[0]
        except Exception as exc:  # recorded as this item's error
            return exc
