"""Batches formed by token count: a chunk's texts run shortest first in batches whose padded
size stays within a token budget, every result comes back at its own position, the actor
reports how full its batches were, and tokenisers are never shared between threads."""

import asyncio
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from schemas.jobs import ExplainPolicy, Item
from schemas.media_refs import MediaLimits
from schemas.storable import json_problem
from workers.handlers.base import Handler, PerThread
from workers.runtime.batching import DynamicBatcher
from workers.runtime.model_core import ModelCore
from workers.runtime.options import ActorOptions


class Words(Handler):
    """A 'model' whose input costs one token per character and echoes its text."""

    def setup(self, model_path: str, device: str) -> None:
        self.batches: list[list[str]] = []

    def preprocess(self, item: Item, params: dict[str, Any]) -> str:
        return str(item.text)

    def size(self, features: str) -> int:
        return len(features)

    def predict(self, batch: list[str]) -> list[dict[str, Any]]:
        self.batches.append(list(batch))
        return [{"echo": text} for text in batch]


def run_chunks(core: ModelCore, *chunks: list[str]) -> list[list[str]]:
    async def scenario() -> list[list[str]]:
        done = await asyncio.gather(
            *(
                core.process(
                    "job",
                    [Item(key=str(n), text=t) for n, t in enumerate(texts)],
                    {},
                    ExplainPolicy.parse("none"),
                    MediaLimits(),
                )
                for texts in chunks
            )
        )
        return [[str((o.output or {})["echo"]) for o in outcomes] for outcomes in done]

    return asyncio.run(scenario())


def words_core(max_batch_size: int = 4, max_batch_tokens: int = 1000) -> ModelCore:
    options = ActorOptions(
        max_batch_size=max_batch_size,
        max_batch_wait_ms=0,
        max_batch_tokens=max_batch_tokens,
        explain_batch_size=1,
        idle_seconds=0,
    )
    return ModelCore.load(Words(), "", "cpu", options)


def test_a_chunk_runs_shortest_first_and_every_result_keeps_its_place():
    texts = ["x" * n for n in (9, 1, 7, 3, 5, 2, 8, 4)]
    core = words_core(max_batch_size=4)
    assert run_chunks(core, texts) == [texts]
    handler = core.handler
    assert isinstance(handler, Words)
    # batches of similar lengths: the four shortest together, then the four longest
    assert [[len(t) for t in b] for b in handler.batches] == [[1, 2, 3, 4], [5, 7, 8, 9]]
    stats = core.stats()
    assert stats["batch_fill"] == 1.0
    assert stats["token_fill"] == round((10 + 29) / (4 * 4 + 4 * 9), 4)


def test_padded_batches_stay_within_the_token_budget_and_a_long_text_runs_alone():
    texts = ["x" * n for n in (2, 2, 2, 2, 30, 6, 6, 6, 40)]
    core = words_core(max_batch_size=8, max_batch_tokens=20)
    assert run_chunks(core, texts) == [texts]
    handler = core.handler
    assert isinstance(handler, Words)
    for batch in handler.batches:
        padded = len(batch) * max(len(t) for t in batch)
        assert padded <= 20 or len(batch) == 1  # one text over the budget still runs, alone
    assert sorted(len(t) for b in handler.batches for t in b) == sorted(len(t) for t in texts)
    assert [len(b) for b in handler.batches] == [4, 3, 1, 1]


def test_concurrent_chunks_share_batches_and_each_gets_its_own_results():
    core = words_core(max_batch_size=64)
    first, second = ["aaa", "b", "cc"], ["dddd", "e"]
    assert run_chunks(core, first, second) == [first, second]
    assert core.stats()["batches"] <= 2  # merged (the first may start alone)


def test_the_batcher_waits_for_more_items_only_while_a_batch_is_not_full():
    sizes: list[int] = []

    def echo(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        return batch

    async def scenario() -> tuple[list[Any], list[Any]]:
        batcher = DynamicBatcher(
            echo, max_size=4, max_wait_s=0.5, executor=ThreadPoolExecutor(1), max_tokens=100
        )
        full = await batcher.submit([1, 2, 3, 4])  # a full batch runs without waiting
        later = asyncio.create_task(batcher.submit([5]))
        await asyncio.sleep(0)
        return full, await asyncio.gather(later, batcher.submit([6, 7]))

    full, (five, six_seven) = asyncio.run(scenario())
    assert (full, five, six_seven) == ([1, 2, 3, 4], [5], [6, 7])
    assert sizes == [4, 3]  # 5 waited for 6 and 7


def test_a_tokenizer_per_thread():
    made: list[int] = []

    def make() -> object:
        made.append(threading.get_ident())
        return object()

    holder = PerThread(make)
    mine = holder.get()
    assert holder.get() is mine
    with ThreadPoolExecutor(1) as pool:
        theirs = pool.submit(holder.get).result()
    assert theirs is not mine and len(made) == 2


def test_text_preprocessing_from_two_threads_at_once_gives_what_one_thread_gives(tmp_path):
    from producers.model_refs import resolve
    from schemas.catalog import load_catalog
    from workers.handlers import handler_for

    spec = load_catalog().get("embed")
    handler = handler_for(spec)
    handler.setup(str(resolve("all-MiniLM-L6-v2", spec, tmp_path).path), "cpu")
    items = [Item(key=str(n), text=f"message {n} " * (n % 40 + 1)) for n in range(300)]

    def ids(part: list[Item]) -> list[list[int]]:
        return [handler.preprocess(i, {}).windows[0].input_ids for i in part]

    alone = ids(items)
    with ThreadPoolExecutor(2) as pool:
        halves = pool.map(ids, [items[::2], items[1::2]])
        evens, odds = list(halves)
    assert evens == alone[::2] and odds == alone[1::2]


def test_outputs_of_many_floats_are_checked_fast_and_still_caught():
    assert json_problem({"embedding": [0.1] * 384, "dim": 384}) is None
    assert "nan" in (json_problem({"embedding": [0.1, math.nan, 0.2]}) or "")
    assert "inf" in (json_problem([1.0, -math.inf]) or "")
    assert json_problem([1e308, 1e308]) is None  # the sum overflows; every value is fine
    assert json_problem([10**400, 1]) is None  # a big int is valid JSON
    assert "NUL" in (json_problem(["ok", "a\x00b"]) or "")
    assert "nan" in (json_problem([[1.0], [math.nan]]) or "")
