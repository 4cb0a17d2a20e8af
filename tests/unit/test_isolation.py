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


@pytest.mark.parametrize("n, culprits", [(1, {0}), (20, {13}), (64, {0, 63}), (7, set())])
def test_items_that_kill_the_actor_end_error_and_the_others_ok(n: int, culprits: set[int]):
    calls = []

    def run(part: list[Item]) -> list[Outcome]:
        calls.append(len(part))
        if any(int(i.key[1:]) in culprits for i in part):
            raise ActorDiedError()
        return [Outcome(key=i.key, status=ItemStatus.OK, output={"n": i.key}) for i in part]

    outcomes = isolate(run, lambda: None, _items(n))
    assert [o.key for o in outcomes] == [i.key for i in _items(n)]
    bad = {int(o.key[1:]) for o in outcomes if o.status == ItemStatus.ERROR}
    assert bad == culprits
    assert all("died while processing this item" in (o.error or "") for o in outcomes if o.error)
    rounds = math.ceil(math.log2(n)) if n > 1 else 0
    # whole, then two halves per round, then the culprit once more alone
    assert len(calls) <= 1 + len(culprits) * (2 * rounds + 1)


def test_an_actor_restarting_or_dying_once_by_chance_blames_no_item():
    """Calls that find the actor restarting are repeated; an item is blamed only when it
    killed a fresh actor twice alone, so an unrelated death (a memory monitor's kill of the
    process, another cause) does not end an innocent item `error`."""
    events = iter(["unavailable", "died", "unavailable", "died"])
    readied = []

    def run(part: list[Item]) -> list[Outcome]:
        event = next(events, None)
        if event == "unavailable":
            raise ActorUnavailableError("restarting", None)
        if event == "died":
            raise ActorDiedError()
        return [Outcome(key=i.key, status=ItemStatus.OK) for i in part]

    outcomes = isolate(run, lambda: readied.append(1), _items(2))
    assert [o.status for o in outcomes] == [ItemStatus.OK, ItemStatus.OK]
    assert len(readied) >= 4  # it waited for the actor before every call


def test_a_model_that_cannot_load_is_not_blamed_on_an_item():
    def run(part: list[Item]) -> list[Outcome]:
        raise RayActorError(error_msg="creation task failed", actor_init_failed=True)

    with pytest.raises(RayActorError):
        isolate(run, lambda: None, _items(4))


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
