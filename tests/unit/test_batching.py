"""Dynamic batching merges concurrent requests, and one failing item fails alone."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from workers.runtime.batching import DynamicBatcher


def test_requests_arriving_together_share_one_call_and_keep_their_order():
    calls: list[list[int]] = []

    def double(batch: list[int]) -> list[int]:
        calls.append(batch)
        return [x * 2 for x in batch]

    async def scenario():
        batcher = DynamicBatcher(
            double, max_size=16, max_wait_s=0.2, executor=ThreadPoolExecutor(1)
        )
        return await asyncio.gather(batcher.submit([1, 2, 3]), batcher.submit([10, 20]))

    a, b = asyncio.run(scenario())
    assert (a, b) == ([2, 4, 6], [20, 40])
    assert calls == [[1, 2, 3, 10, 20]]


def test_batches_never_exceed_the_maximum():
    sizes: list[int] = []

    def echo(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        return batch

    async def scenario():
        batcher = DynamicBatcher(echo, max_size=4, max_wait_s=0.01, executor=ThreadPoolExecutor(1))
        return await batcher.submit(list(range(10)))

    assert asyncio.run(scenario()) == list(range(10))
    assert sizes == [4, 4, 2]


def test_a_poison_item_fails_alone():
    def picky(batch: list[int]) -> list[int]:
        if 13 in batch:
            raise ValueError("unlucky")
        return batch

    async def scenario():
        batcher = DynamicBatcher(picky, max_size=8, max_wait_s=0.0, executor=ThreadPoolExecutor(1))
        return await batcher.submit([1, 13, 2])

    one, bad, two = asyncio.run(scenario())
    assert (one, two) == (1, 2) and isinstance(bad, ValueError)
