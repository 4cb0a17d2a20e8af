"""One failing item fails alone: an item that kills the model's process is found by
splitting its chunk; a one-item chunk whose prediction fails ends `error` at once."""

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from schemas.jobs import Item, Outcome
from schemas.states import ItemStatus
from workers.isolation import isolate
from workers.runtime.actor import ModelActor
from workers.runtime.batching import DynamicBatcher


def _items(n: int) -> list[Item]:
    return [Item(key=f"k{i}", text=f"text {i}") for i in range(n)]


class FakeActor:
    """A process that dies (a new pid after its restart) on a culprit; Ray 2.60 reports
    that as unavailable, like a call sent while it restarts."""

    def __init__(self, culprits: set[int], blips: int = 0) -> None:
        self.culprits, self.blips, self.pid, self.calls = culprits, blips, 100, []

    def ready(self) -> int:
        return self.pid

    def run(self, part: list[Item]) -> list[Outcome]:
        self.calls.append(len(part))
        if self.blips:  # a restart in progress or a network blip: the process lives on
            self.blips -= 1
            raise ActorUnavailableError("restarting", None)
        if any(int(i.key[1:]) in self.culprits for i in part):
            self.pid += 1
            raise ActorUnavailableError("RpcError: Socket closed", None)
        return [Outcome(key=i.key, status=ItemStatus.OK, output={"n": i.key}) for i in part]


@pytest.mark.parametrize("n, culprits", [(1, {0}), (20, {13}), (64, {0, 63}), (7, set())])
def test_items_that_kill_the_actor_end_error_and_the_others_ok(n: int, culprits: set[int]):
    actor = FakeActor(culprits)
    outcomes = isolate(actor.run, actor.ready, _items(n))
    assert [o.key for o in outcomes] == [i.key for i in _items(n)]
    bad = {int(o.key[1:]) for o in outcomes if o.status == ItemStatus.ERROR}
    assert bad == culprits
    assert all("died while processing this item" in (o.error or "") for o in outcomes if o.error)
    rounds = math.ceil(math.log2(n)) if n > 1 else 0
    # whole, then two halves per round, then the culprit once more alone
    assert len(actor.calls) <= 1 + len(culprits) * (2 * rounds + 1)


def test_calls_that_find_the_actor_restarting_are_repeated_not_blamed():
    actor = FakeActor(culprits=set(), blips=3)
    outcomes = isolate(actor.run, actor.ready, _items(2))
    assert [o.status for o in outcomes] == [ItemStatus.OK, ItemStatus.OK]
    assert actor.calls == [2, 2, 2, 2]  # the same part again, not split


def test_an_item_is_blamed_only_when_it_killed_the_process_twice_alone():
    """One unrelated death (a memory monitor's kill, another cause) blames no item."""
    deaths = iter([True, True])  # the whole chunk, then the first half, die once each

    def run(part: list[Item]) -> list[Outcome]:
        if next(deaths, False):
            actor.pid += 1
            raise ActorDiedError()
        return [Outcome(key=i.key, status=ItemStatus.OK) for i in part]

    actor = FakeActor(set())
    outcomes = isolate(run, actor.ready, _items(2))
    assert [o.status for o in outcomes] == [ItemStatus.OK, ItemStatus.OK]


def test_a_model_that_cannot_load_is_not_blamed_on_an_item():
    def run(part: list[Item]) -> list[Outcome]:
        raise RayActorError(error_msg="creation task failed", actor_init_failed=True)

    with pytest.raises(RayActorError):
        isolate(run, lambda: 1, _items(4))


class FailsOn:
    """A stand-in handler: the prediction of `bad` raises."""

    explain_method = "none"

    def __init__(self, bad: str) -> None:
        self.bad = bad

    def preprocess(self, item: Item, params: dict[str, Any]) -> str:
        return item.text or ""

    def predict(self, batch: list[str]) -> list[dict[str, Any]]:
        if self.bad in batch:
            raise ValueError(f"cannot predict {self.bad!r}")
        return [{"len": len(x)} for x in batch]


def _actor(handler: FailsOn) -> ModelActor:
    actor = ModelActor.__new__(ModelActor)
    actor.handler = handler  # type: ignore[assignment]
    actor.options = {"idle_seconds": 0, "explain_batch_size": 4}
    actor.executor = ThreadPoolExecutor(1)
    actor.batcher = DynamicBatcher(handler.predict, 8, 0.001, actor.executor)
    actor.items_done, actor.in_flight, actor.last_used, actor._reaper = 0, 0, 0.0, None
    return actor


def test_a_one_item_chunk_whose_prediction_fails_ends_error_at_once():
    actor = _actor(FailsOn("boom"))
    out = asyncio.run(actor.process("job", [{"key": "e1", "text": "boom"}], {}, "none"))
    assert out[0]["status"] == "error" and "cannot predict 'boom'" in out[0]["error"]


def test_several_items_all_failing_still_points_at_the_model():
    actor = _actor(FailsOn("boom"))
    raw = [{"key": "a", "text": "boom"}, {"key": "b", "text": "boom"}]
    with pytest.raises(RuntimeError, match="all 2 predictions failed"):
        asyncio.run(actor.process("job", raw, {}, "none"))


def test_only_device_errors_make_one_failed_item_the_models_fault():
    from workers.runtime.actor import model_at_fault

    assert not model_at_fault([ValueError("cannot predict 'shipping' on this chip")])
    assert model_at_fault([RuntimeError("CUDA error: device-side assert triggered")])
    assert model_at_fault([MemoryError()])
    assert model_at_fault([ValueError("a"), ValueError("b")])  # several items at once
