"""The model actor's work without Ray (ModelCore): which items the explain policy picks, and
every failure kept on its own item: bad input, a failed prediction, an output no database
can hold, a failed explanation."""

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest

from schemas.catalog import load_catalog
from schemas.errors import InvalidInput
from schemas.jobs import ExplainPolicy, Explanation, Item, Outcome
from schemas.media_refs import MediaLimits
from schemas.settings import Settings
from schemas.states import ExplanationStatus, ItemStatus
from workers.handlers import make_handler
from workers.handlers.base import Handler
from workers.media_decoding import limits_from
from workers.runtime.model_core import ModelCore
from workers.runtime.options import ActorOptions, actor_options

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"  # text-stats: a task with no model
NO_FILES = MediaLimits()  # no input roots


class Scripted(Handler):
    """A handler whose behaviour each item's text chooses: `unsure...` is predicted with low
    confidence, `boom` fails its prediction, `nan` predicts NaN, `cannot-explain` fails the
    explanation of its batch, an empty text is invalid."""

    explain_method = "scripted"

    def setup(self, model_path: str, device: str) -> None:
        self.device = device
        self.batches: list[list[str]] = []
        self.limits_seen: list[MediaLimits] = []

    def preprocess(self, item: Item, params: dict[str, Any]) -> str:
        self.limits_seen.append(limits_from(params))
        if not item.text:
            raise InvalidInput("scripted needs a non-empty text")
        return str(item.text)

    def predict(self, batch: list[str]) -> list[dict[str, Any]]:
        self.batches.append(list(batch))
        if "boom" in batch:
            raise ValueError("boom is not predictable")
        return [
            {
                "text": text,
                "score": math.nan if text == "nan" else 1.0,
                "confidence": 0.2 if text.startswith("unsure") else 0.9,
            }
            for text in batch
        ]

    def confidence(self, output: dict[str, Any]) -> float | None:
        return float(output["confidence"])

    def explain(
        self, batch: list[str], outputs: list[dict[str, Any]], steps: int, internal_batch_size: int
    ) -> list[Explanation]:
        if "cannot-explain" in batch:
            raise RuntimeError("the attribution did not converge")
        return [
            Explanation(
                method=self.explain_method,
                tokens=[text],
                attributions=[math.inf if text == "inf-attribution" else float(steps)],
            )
            for text in batch
        ]


def options(**changes: Any) -> ActorOptions:
    base = ActorOptions(
        max_batch_size=16,
        max_batch_wait_ms=20,
        explain_batch_size=4,
        idle_seconds=0,
    )
    return base.model_copy(update=changes)


def items(*texts: str) -> list[Item]:
    return [Item(key=f"k{n}", text=text) for n, text in enumerate(texts)]


def run(
    core: ModelCore,
    chunks: list[list[Item]],
    policy: str = "none",
    job_id: str = "job",
    params: dict[str, Any] | None = None,
    limits: MediaLimits = NO_FILES,
) -> list[list[Outcome]]:
    """The chunks' outcomes, the chunks sent at once as concurrent workers send them."""

    async def all_chunks() -> list[list[Outcome]]:
        calls = [
            core.process(job_id, chunk, params or {}, ExplainPolicy.parse(policy), limits)
            for chunk in chunks
        ]
        return await asyncio.gather(*calls)

    return asyncio.run(all_chunks())


@pytest.fixture
def core() -> Any:
    model = ModelCore.load(Scripted(), "", "cpu", options())
    yield model
    model.close()


def by_key(outcomes: list[Outcome]) -> dict[str, Outcome]:
    return {o.key: o for o in outcomes}


def test_invalid_input_ends_invalid_with_its_message_and_the_rest_are_predicted(core: ModelCore):
    [outcomes] = run(core, [items("fine", "", "also fine")])
    assert [o.status for o in outcomes] == [ItemStatus.OK, ItemStatus.INVALID, ItemStatus.OK]
    assert outcomes[1].error == "scripted needs a non-empty text"
    assert outcomes[0].output == {"text": "fine", "score": 1.0, "confidence": 0.9}


def test_an_item_whose_prediction_fails_fails_alone_and_its_batch_mates_succeed(core: ModelCore):
    first, second = run(core, [items("a", "boom", "b"), items("c", "d")])
    assert [o.status for o in first] == [ItemStatus.OK, ItemStatus.ERROR, ItemStatus.OK]
    assert first[1].error == "prediction failed: ValueError: boom is not predictable"
    assert [o.status for o in second] == [ItemStatus.OK, ItemStatus.OK]
    # both chunks were one batch of five, which failed, then was predicted item by item
    assert core.handler.batches[0] == ["a", "boom", "b", "c", "d"]  # type: ignore[attr-defined]
    assert core.stats()["batch_sizes"] == {5: 1}
    assert core.stats()["items"] == 5


def test_an_output_no_database_can_hold_ends_error_and_is_not_explained(core: ModelCore):
    [outcomes] = run(core, [items("ok", "nan")], policy="all")
    ok, nan = outcomes
    assert ok.status == ItemStatus.OK and ok.explanation is not None
    assert nan.status == ItemStatus.ERROR and nan.output is None and nan.explanation is None
    assert nan.error == "the model's output holds nan, which JSON cannot represent"
    json.dumps([o.model_dump(mode="json") for o in outcomes], allow_nan=False)  # storable


@pytest.mark.parametrize(
    "policy, explained",
    [
        ("none", set()),
        ("all", {"k0", "k1", "k2"}),
        ("low-confidence:0.5", {"k1"}),
        ("low-confidence:0.95", {"k0", "k1", "k2"}),
        ("sample:0", set()),
        ("sample:1", {"k0", "k1", "k2"}),
    ],
)
def test_the_policy_picks_the_items_explained(core: ModelCore, policy: str, explained: set[str]):
    chunk = items("sure", "unsure", "sure again", "", "boom")  # k3 invalid, k4 failed
    job_explainer = {"method": "scripted", "steps": 7}
    [outcomes] = run(core, [chunk], policy=policy, params={"explainer": job_explainer})
    assert {o.key for o in outcomes if o.explanation is not None} == explained
    for o in outcomes:
        if o.explanation is not None:
            assert o.explanation.status == ExplanationStatus.OK
            assert o.explanation.attributions == [7.0]  # the job's explainer steps


def test_sampling_explains_about_its_rate_and_the_same_items_when_a_chunk_is_retried():
    chunk = [Item(key=f"row-{n}", text=f"text {n}") for n in range(200)]
    picked = []
    for attempt in ("job-1", "job-1", "job-2"):
        model = ModelCore.load(Scripted(), "", "cpu", options(explain_batch_size=64))
        try:
            [outcomes] = run(model, [chunk], policy="sample:0.25", job_id=attempt)
        finally:
            model.close()
        assert all(o.status == ItemStatus.OK for o in outcomes)
        picked.append({o.key for o in outcomes if o.explanation is not None})
    assert 25 <= len(picked[0]) <= 75  # sha256 of the key: fixed, so never flaky
    assert picked[0] == picked[1]  # a retried chunk explains the same items
    assert picked[0] != picked[2]  # another job samples other items


def test_a_failed_explanation_leaves_the_prediction_ok(core: ModelCore):
    # explain_batch_size 4: the first four share an explanation call, which fails; the last
    # two share another
    chunk = items("a", "cannot-explain", "b", "c", "d", "inf-attribution")
    [outcomes] = run(core, [chunk], policy="all")
    assert all(o.status == ItemStatus.OK and o.output for o in outcomes)
    failed = [o.explanation for o in outcomes[:4]]
    assert all(e is not None and e.status == ExplanationStatus.FAILED for e in failed)
    assert all(e and e.method == "scripted" for e in failed)
    assert all(e and "did not converge" in (e.error or "") for e in failed)
    assert outcomes[4].explanation and outcomes[4].explanation.status == ExplanationStatus.OK
    # an explanation no database can hold is recorded as failed, its prediction stands
    unstorable = outcomes[5].explanation
    assert unstorable and unstorable.status == ExplanationStatus.FAILED
    assert "inf" in (unstorable.error or "")


def test_the_handler_reads_media_under_the_limits_given_typed(core: ModelCore):
    limits = MediaLimits(roots=("/srv/media",), max_bytes=1000)
    run(core, [items("a", "b")], params={"media_limits": {"roots": ["/elsewhere"]}}, limits=limits)
    assert core.handler.limits_seen == [limits, limits]  # type: ignore[attr-defined]


def test_a_task_from_outside_runs_with_its_params(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    handler = make_handler("sluice_text_stats.handler:TextStatsHandler")
    model = ModelCore.load(handler, "", "cpu", options())
    try:
        [outcomes] = run(
            model, [items("tiny words and enormous ones", " ")], params={"min_word_length": 8}
        )
    finally:
        model.close()
    assert outcomes[0].output and outcomes[0].output["long_words"] == 1
    assert outcomes[1].status == ItemStatus.INVALID
    assert outcomes[1].error == "text-stats needs a non-empty text"
    assert model.stats()["device"] == "cpu"


def test_options_are_read_once_from_settings_and_cross_to_the_actor_as_json():
    embed = load_catalog().get("embed")  # has an explainer, 24 steps by default
    settings = Settings(max_batch_size=32, max_batch_wait_ms=2.5, actor_idle_seconds=0)
    opts = actor_options(settings, embed)
    assert opts.max_batch_size == 32 and opts.max_batch_wait_s == 0.0025
    # explanation steps are the job's (params["explainer"]), not the actor's: one actor
    # serves jobs explained with any steps
    assert actor_options(settings.model_copy(update={"explain_steps": 5}), embed) == opts
    wire = json.loads(json.dumps(opts.model_dump(mode="json")))
    assert ActorOptions.model_validate(wire) == opts
    with pytest.raises(ValueError):
        opts.max_batch_size = 1  # frozen
    with pytest.raises(ValueError):
        ActorOptions.model_validate({**wire, "max_batch_sise": 8})  # a typo is refused
