"""The `generate` handler and its parameters without Ray: batches of mixed lengths give what
each prompt gives alone, sampled rows repeat under the job's seed whatever their
batch-mates, the model's positions cap the token budget, and outputs that miss their JSON
Schema end `invalid`."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from schemas.catalog import load_catalog
from schemas.errors import SluiceError
from schemas.jobs import ExplainPolicy, Item
from schemas.media_refs import MediaLimits
from schemas.states import ItemStatus
from workers.handlers import handler_for
from workers.runtime.model_core import ModelCore
from workers.runtime.options import ActorOptions
from workers.training.scratch_generators import random_digit_texts, spell_digits

SPEC = load_catalog().get("generate")
SPELL = "Spell: {text}"


OPTIONS = ActorOptions(
    max_batch_size=64, max_batch_wait_ms=50, explain_batch_size=8, idle_seconds=0
)


@pytest.fixture(scope="module", params=["tiny-spell-causal", "tiny-spell-seq2seq"])
def core(request: pytest.FixtureRequest, demo_models: Path) -> ModelCore:
    return ModelCore.load(handler_for(SPEC), str(demo_models / request.param), "cpu", OPTIONS)


def run(core: ModelCore, items: list[Item], **params: Any) -> list[Any]:
    """One chunk through a fresh core on the loaded model (a core's batcher lives in one
    event loop, as in the actor)."""
    checked = SPEC.check_params({"prompt": SPELL, **params})
    items = SPEC.params.prepare_items(checked, items)
    fresh = ModelCore(core.handler, "cpu", OPTIONS)
    return asyncio.run(
        fresh.process("job-1", items, checked, ExplainPolicy.parse("none"), MediaLimits())
    )


def texts(n: int, seed: int) -> list[Item]:
    return [Item(key=f"k{i}", text=d) for i, d in enumerate(random_digit_texts(n, seed))]


def test_a_batch_of_mixed_lengths_gives_what_each_gives_alone(core: ModelCore):
    items = texts(24, seed=11)
    together = run(core, items)
    alone = [run(core, [item])[0] for item in items[:8]]
    for item, outcome in zip(items, together, strict=False):
        assert outcome.status == ItemStatus.OK
        assert outcome.output["text"] == spell_digits(item.text)
    assert [o.output for o in alone] == [o.output for o in together[:8]]


def test_sampled_rows_repeat_under_the_jobs_seed_whatever_their_batch(core: ModelCore):
    items = texts(6, seed=5)
    first = run(core, items, temperature=1.5, seed=42)
    again = run(core, items[3:] + items[:3], temperature=1.5, seed=42)
    by_key = {o.key: o.output["text"] for o in again}
    assert [o.output["text"] for o in first] == [by_key[o.key] for o in first]
    other = run(core, items, temperature=1.5, seed=43)
    assert [o.output for o in other] != [o.output for o in first]  # the seed matters


def test_stop_strings_max_new_tokens_and_an_empty_generation_are_flagged(core: ModelCore):
    cut, stopped, empty = run(
        core,
        [Item(key="cut", text="1 2 3 4"), Item(key="stop", text="1 2 3"), Item(key="e", text="4")],
        max_new_tokens=2,
        stop=["three", "four"],
    )
    assert cut.output["text"] == "one two" and cut.output["flags"] == ["max_new_tokens"]
    assert cut.output["finish_reason"] == "length" and cut.output["completion_tokens"] == 2
    # "one two" fits in 2 tokens; the stop string "three" is never reached
    assert stopped.output["text"] == "one two"
    assert empty.output["text"] == "" and "empty" in empty.output["flags"]
    assert empty.output["finish_reason"] == "stop_string"


def test_the_models_positions_cap_the_budget_and_refuse_a_prompt_too_long(core: ModelCore):
    positions = core.handler.positions  # type: ignore[attr-defined]
    assert positions is not None
    (row,) = run(core, [Item(key="a", text="1 2")], max_new_tokens=4000)
    assert row.output["text"] == "one two" and "capped" in row.output["flags"]
    assert "capped at" in row.output["notes"][0]
    (long,) = run(core, [Item(key="b", text=" ".join("7" * (positions + 5)))])
    assert long.status == ItemStatus.INVALID and "tokens" in (long.error or "")


def test_output_that_misses_its_json_schema_ends_invalid_with_the_reason(core: ModelCore):
    (row,) = run(core, [Item(key="a", text="5")], json_schema={"type": "object"})
    assert row.status == ItemStatus.INVALID and "not JSON" in (row.error or "")


def test_submit_refuses_what_cannot_work():
    items = [Item(key="a", text="1", fields={"title": "x"}), Item(key="b", text="2")]
    checked = SPEC.check_params({"prompt": "{title}: {text}"})
    a, b = SPEC.params.prepare_items(checked, items)
    assert a.fields == {"title": "x"} and b.invalid and "{title}" in b.invalid
    with pytest.raises(ValueError, match=r"\{body\}.*its fields: text, title"):
        SPEC.params.prepare_items(SPEC.check_params({"prompt": "{body}"}), items)
    for bad, words in [
        ({"prompt": "{0}"}, "plain field name"),
        ({"prompt": "{text!r}"}, "no format or conversion"),
        ({"prompt": "{text"}, "literal braces"),
        ({"num_beams": 2}, "takes no parameter 'num_beams'"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"json_schema": {"type": 5}}, "not a valid JSON Schema"),
    ]:
        with pytest.raises(SluiceError, match=words):
            SPEC.check_params(bad)
    # sampling without a seed: one is drawn and recorded, so a retried chunk repeats
    assert isinstance(SPEC.check_params({"temperature": 0.7})["seed"], int)
    assert isinstance(SPEC.check_params({"top_p": 0.9})["seed"], int)  # top_p alone samples
    assert "seed" not in SPEC.check_params({"temperature": 0, "top_p": 0.9})  # greedy


def test_a_models_own_beam_settings_do_not_change_the_rows(demo_models: Path, tmp_path: Path):
    import json
    import shutil

    model = tmp_path / "beams"
    shutil.copytree(demo_models / "tiny-spell-seq2seq", model)
    config = json.loads((model / "generation_config.json").read_text())
    config.update(num_beams=2, num_return_sequences=2)
    (model / "generation_config.json").write_text(json.dumps(config))
    core = ModelCore.load(handler_for(SPEC), str(model), "cpu", OPTIONS)
    items = texts(6, seed=9)
    assert [o.output["text"] for o in run(core, items)] == [spell_digits(i.text) for i in items]


def test_a_schema_reference_that_points_nowhere_is_refused_at_submit():
    with pytest.raises(SluiceError, match="points at nothing"):
        SPEC.check_params({"json_schema": {"$ref": "#/definitions/missing"}})
    with pytest.raises(SluiceError, match="points at nothing"):
        SPEC.check_params({"json_schema": {"$ref": "https://example.org/schema.json"}})
    good = {"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"}
    assert SPEC.check_params({"json_schema": good})["json_schema"] == good


def test_rows_give_their_fields_as_text_and_stop_strings_keep_commas_and_newlines(tmp_path: Path):
    import datetime as dt
    from decimal import Decimal

    from ops.cli import CATALOG
    from ops.task_options import param_values
    from producers.readers import rows_to_items

    rows = [
        {"id": 7, "body": "1 2", "day": dt.date(2024, 1, 2), "amount": Decimal("12.50"),
         "tags": ["a", "b"], "note": ""},
    ]  # fmt: skip
    (item,) = rows_to_items(
        list(rows[0]), iter(rows), text_column="body", key_column="id", max_chars=100,
        keep_fields=True,
    )  # fmt: skip
    assert item.fields == {"id": "7", "body": "1 2", "day": "2024-01-02", "amount": "12.50",
                           "tags": '["a", "b"]', "note": ""}  # fmt: skip
    checked = SPEC.check_params({"prompt": "{id} {day} {amount} {note}|{body}"})
    (ready,) = SPEC.params.prepare_items(checked, [item])
    assert ready.invalid is None and set(ready.fields or {}) == {
        "id",
        "day",
        "amount",
        "note",
        "body",
    }
    assert param_values(CATALOG, {"stop": ("\n", ",", "###, END")})["stop"] == [
        "\n",
        ",",
        "###, END",
    ]
