"""One failing item fails alone: an item that kills the model's process is found by
splitting its chunk; a one-item chunk whose prediction fails ends `error` at once."""

import asyncio
import math
from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from schemas.jobs import ExplainPolicy, Item, Outcome
from schemas.media_refs import MediaLimits
from schemas.states import ItemStatus
from workers.isolation import isolate
from workers.runtime.model_core import ModelCore
from workers.runtime.options import ActorOptions


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


def _process(handler: FailsOn, raw: list[dict[str, Any]]) -> list[Outcome]:
    options = ActorOptions(
        max_batch_size=8, max_batch_wait_ms=1, explain_batch_size=4, idle_seconds=0
    )
    core = ModelCore(handler, "cpu", options)  # type: ignore[arg-type]
    items = [Item.model_validate(r) for r in raw]
    try:
        return asyncio.run(
            core.process("job", items, {}, ExplainPolicy.parse("none"), MediaLimits())
        )
    finally:
        core.close()


def test_a_one_item_chunk_whose_prediction_fails_ends_error_at_once():
    out = _process(FailsOn("boom"), [{"key": "e1", "text": "boom"}])
    assert out[0].status == ItemStatus.ERROR and "cannot predict 'boom'" in (out[0].error or "")


def test_several_items_all_failing_still_points_at_the_model():
    raw = [{"key": "a", "text": "boom"}, {"key": "b", "text": "boom"}]
    with pytest.raises(RuntimeError, match="all 2 predictions failed"):
        _process(FailsOn("boom"), raw)


def test_only_device_errors_make_one_failed_item_the_models_fault():
    from workers.runtime.model_core import model_at_fault

    assert not model_at_fault([ValueError("cannot predict 'shipping' on this chip")])
    assert model_at_fault([RuntimeError("CUDA error: device-side assert triggered")])
    assert model_at_fault([MemoryError()])
    assert model_at_fault([ValueError("a"), ValueError("b")])  # several items at once
