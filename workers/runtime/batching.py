"""Dynamic batching: items from concurrent requests are merged into one model call."""

import asyncio
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any


class DynamicBatcher:
    """Collects items until `max_size` are waiting or `max_wait_s` has passed since the first,
    then runs `run_batch` on them in `executor` (one model call at a time)."""

    def __init__(
        self,
        run_batch: Callable[[list[Any]], list[Any]],
        max_size: int,
        max_wait_s: float,
        executor: Executor,
    ) -> None:
        self.run_batch = run_batch
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.executor = executor
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()
        self.batch_sizes: Counter[int] = Counter()
        self._loop_task: asyncio.Task[None] | None = None

    async def submit(self, items: list[Any]) -> list[Any]:
        """Results in order; an item whose prediction failed gets its exception in its place."""
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._serve())
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, fut in zip(items, futures, strict=True):
            self.queue.put_nowait((item, fut))
        return await asyncio.gather(*futures, return_exceptions=True)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_size:
                try:
                    batch.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            # A cancelled chunk's items (ray.cancel on its call) are not run at all.
            batch = [(item, fut) for item, fut in batch if not fut.done()]
            if not batch:
                continue
            self.batch_sizes[len(batch)] += 1
            items = [item for item, _ in batch]
            try:
                results = await loop.run_in_executor(self.executor, self._run_isolated, items)
            except Exception as exc:  # never leave a caller waiting forever
                results = [exc] * len(batch)
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

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
