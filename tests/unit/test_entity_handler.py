"""The `extract-entities` handler on the demo tagger (`tiny-entities`): a batch of texts of
mixed length and language, a document longer than the model's window among them, gives
item by item what transformers' token-classification pipeline gives on the same weights
unbatched, for every aggregation strategy; its entities' text is the text's own characters;
bad texts are refused one by one; explanations attribute each entity to its words."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ops.demo_entity_models import token_classifier
from schemas.errors import InvalidInput
from schemas.jobs import Item
from schemas.states import ExplanationStatus
from workers.handlers.entities import ExtractEntitiesHandler, TextWindows
from workers.training.scratch_entities import entity_sentences, join_sentences

FRESH = 20240917  # a seed the training never used
ENGLISH = "Contact Ada Lovelace at ada@example.com or +44 20 7946 0958 in London at Acme Corp."
CHINESE = "请联系张伟，电话 138 0013 8000，邮箱 zhangwei@example.cn，地址北京，公司华为。"
NOTHING = "Nothing to report today."
STRIDE = 32


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def handler(demo_models: Path) -> ExtractEntitiesHandler:
    h = ExtractEntitiesHandler()
    h.setup(str(demo_models / "tiny-entities"), "cpu")
    return h


@pytest.fixture(scope="module")
def tagger(demo_models: Path) -> Any:
    return token_classifier(demo_models / "tiny-entities")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    document = join_sentences(entity_sentences(14, FRESH + 1, "mixed")).text
    held = [s.text for lang in ("en", "zh") for s in entity_sentences(3, FRESH, lang)]
    return [ENGLISH, document, CHINESE, NOTHING, *held]


def features(handler: ExtractEntitiesHandler, texts: list[str], **params: Any) -> list[Any]:
    return [handler.preprocess(Item(key=str(i), text=t), params) for i, t in enumerate(texts)]


def as_rows(found: list[dict[str, Any]], text: str) -> list[tuple[str, str, int, int]]:
    return [
        (
            str(e.get("entity_group", e.get("entity"))),
            text[e["start"] : e["end"]],
            e["start"],
            e["end"],
        )
        for e in found
    ]


@pytest.mark.parametrize("aggregation", ["simple", "first", "average", "max"])
def test_a_mixed_batch_equals_the_pipeline_item_by_item(
    handler: ExtractEntitiesHandler, tagger: Any, texts: list[str], aggregation: str
) -> None:
    batch = features(handler, texts, aggregation=aggregation, stride=STRIDE)
    assert len(batch[1].windows) > 2  # the document is read in several windows
    outputs = handler.predict(batch)
    for text, out in zip(texts, outputs, strict=True):
        expected = tagger(text, aggregation_strategy=aggregation, stride=STRIDE)
        got = out["entities"]
        assert [(e["label"], e["text"], e["start"], e["end"]) for e in got] == as_rows(
            expected, text
        )
        for mine, theirs in zip(got, expected, strict=True):
            assert mine["score"] == pytest.approx(float(theirs["score"]), abs=1e-4)
    # entities of the document's later windows are found, not only its first window's
    first_window_end = max(e for _, e in batch[1].windows[0].offsets)
    assert any(e["start"] > first_window_end for e in outputs[1]["entities"])
    assert outputs[3] == {"entities": []}


def test_entity_text_is_the_texts_own_characters(handler: ExtractEntitiesHandler) -> None:
    (out,) = handler.predict(features(handler, [ENGLISH]))
    assert [(e["label"], e["text"]) for e in out["entities"]] == [
        ("PERSON", "Ada Lovelace"),
        ("EMAIL", "ada@example.com"),  # the pipeline's `word` reads "ada @ example. com"
        ("PHONE", "+44 20 7946 0958"),
        ("PLACE", "London"),
        ("ORG", "Acme Corp"),
    ]
    (out,) = handler.predict(features(handler, [CHINESE]))
    assert [e["text"] for e in out["entities"]] == [
        "张伟",
        "138 0013 8000",
        "zhangwei@example.cn",
        "北京",
        "华为",
    ]


def test_aggregation_none_gives_each_piece_as_tagged(
    handler: ExtractEntitiesHandler, tagger: Any
) -> None:
    texts = [ENGLISH, CHINESE, NOTHING]
    outputs = handler.predict(features(handler, texts, aggregation="none"))
    for text, out in zip(texts, outputs, strict=True):
        expected = tagger(text, aggregation_strategy="none")  # one window: no stride needed
        assert [(e["label"], e["text"], e["start"], e["end"]) for e in out["entities"]] == (
            as_rows(expected, text)
        )
    labels = {e["label"] for e in outputs[0]["entities"]}
    assert {"B-PERSON", "I-PERSON", "B-EMAIL"} <= labels


def test_min_score_leaves_out_less_sure_entities(
    handler: ExtractEntitiesHandler, texts: list[str]
) -> None:
    everything = handler.predict(features(handler, texts))
    scores = sorted(e["score"] for out in everything for e in out["entities"])
    cut = scores[len(scores) // 2]
    kept = handler.predict(features(handler, texts, min_score=cut))
    for out, full in zip(kept, everything, strict=True):
        assert out["entities"] == [e for e in full["entities"] if e["score"] >= cut]
    assert 0 < sum(len(o["entities"]) for o in kept) < len(scores)


@pytest.mark.parametrize(
    "text, params, message",
    [
        (None, {}, "missing text"),
        ("   ", {}, "empty text"),
        (12, {}, "expected a string"),
        ("Ada Lovelace", {"stride": 200}, "give a stride under 126"),
    ],
)
def test_bad_items_are_refused_one_by_one(
    handler: ExtractEntitiesHandler, text: Any, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        handler.preprocess(Item(key="k", text=text), params)


def test_explanations_attribute_each_entity_to_its_words(
    handler: ExtractEntitiesHandler, texts: list[str]
) -> None:
    batch = features(handler, [ENGLISH, CHINESE, NOTHING, texts[1]])
    outputs = handler.predict(batch)
    explanations = handler.explain(batch, outputs, steps=16, internal_batch_size=64)
    assert [e.status for e in explanations] == [ExplanationStatus.OK] * 4
    for expl, out in zip(explanations[:2], outputs, strict=False):
        explained = expl.detail["entities"]  # type: ignore[index]
        assert [(e["label"], e["text"]) for e in explained] == [
            (e["label"], e["text"]) for e in out["entities"]
        ]
        assert (expl.tokens, expl.attributions) == (
            explained[0]["tokens"],
            explained[0]["attributions"],
        )
        for e in explained:
            assert len(e["tokens"]) == len(e["attributions"]) == len(e["offsets"])
            own = [
                a
                for (s, t), a in zip(e["offsets"], e["attributions"], strict=True)
                if s >= e["start"] and t <= e["end"]
            ]
            assert own  # the entity's words are among those attributed
        # the person is explained by its name: one of its words is among the 3 strongest
        person = explained[0]
        top = sorted(person["attributions"], reverse=True)[:3]
        names = [
            a
            for (s, t), a in zip(person["offsets"], person["attributions"], strict=True)
            if s >= person["start"] and t <= person["end"]
        ]
        assert max(names) >= top[-1], person
    empty = explanations[2]
    assert empty.detail == {"entities": [], "note": "no entities were found: nothing to explain"}
    assert empty.tokens == [] and empty.target is None
    # an entity of a later window of the document is explained in that window
    assert max(e["window"] for e in explanations[3].detail["entities"]) > 0  # type: ignore[index]


def test_one_failing_explanation_fails_only_its_item(handler: ExtractEntitiesHandler) -> None:
    batch = features(handler, [ENGLISH, CHINESE])
    outputs = handler.predict(batch)
    # an entity the text does not hold (a row changed under the explainer) cannot be placed
    broken = [outputs[0], {"entities": [{**outputs[1]["entities"][0], "start": 900, "end": 905}]}]
    explanations = handler.explain(batch, broken, steps=4, internal_batch_size=64)
    assert [e.status for e in explanations] == [ExplanationStatus.OK, ExplanationStatus.FAILED]
    assert "no window holds the entity" in (explanations[1].error or "")


def test_windows_are_padded_together_by_length(handler: ExtractEntitiesHandler) -> None:
    """Short texts are not padded to the long document's windows (base.run_by_length)."""
    batch: list[TextWindows] = features(handler, [NOTHING, ENGLISH * 6])
    seen: list[int] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        seen.append(kwargs["input_ids"].shape[1])

    hook = handler.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        handler.predict(batch)
    finally:
        hook.remove()
    assert min(seen) == len(batch[0].windows[0].input_ids) < max(seen)
