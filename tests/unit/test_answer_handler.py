"""The `answer-question` handler on the demo reader (`tiny-qa`): a batch of questions over
contexts of mixed length, some longer than the model's window, gives item by item what the
v4 question-answering algorithm (workers/extractive_qa.answer_questions) gives one question
at a time: the same spans, scores within 1e-4; a question its context does not answer gets
a null answer with the no-answer score; bad items are refused one by one; explanations
attribute the answer to the question's and the context's words."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ops.demo_entity_models import qa_reader
from schemas.errors import InvalidInput
from schemas.jobs import Item
from schemas.states import ExplanationStatus
from workers.extractive_qa import answer_questions
from workers.handlers.answers import AnswerQuestionHandler, QuestionFeatures
from workers.handlers.base import WINDOWS_PER_PASS
from workers.training.scratch_qa import FILLERS, qa_triples

FRESH = 20240917  # a seed the training never used
CONTEXT = (
    "The capital of Veltria is Orbon. Mira Kaldsen works at Tessaly Labs. "
    "The order 4417 ships on Tuesday."
)
ANSWERS = {
    "What is the capital of Veltria?": "Orbon",
    "Where does Mira Kaldsen work?": "Tessaly Labs",
    "When does order 4417 ship?": "Tuesday",
}
UNANSWERED = "Where does Mira Kaldsen live?"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def handler(demo_models: Path) -> AnswerQuestionHandler:
    h = AnswerQuestionHandler()
    h.setup(str(demo_models / "tiny-qa"), "cpu")
    return h


@pytest.fixture(scope="module")
def reader(demo_models: Path) -> tuple[Any, Any]:
    return qa_reader(demo_models / "tiny-qa")


def long_context(fillers_before: int) -> str:
    return " ".join([*FILLERS[:fillers_before], CONTEXT, *FILLERS[fillers_before:]])


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    """(question, context): short and long contexts, answers early, late and absent."""
    out = [(q, CONTEXT) for q in ANSWERS] + [(UNANSWERED, CONTEXT)]
    out += [(q, long_context(k)) for q, k in zip(ANSWERS, (0, 10, len(FILLERS)), strict=True)]
    out += [(UNANSWERED, long_context(10))]
    out += [(t.question, t.context) for t in qa_triples(8, FRESH)]
    return out


def features(handler: AnswerQuestionHandler, pairs: list[tuple[str, str]], **params: Any) -> Any:
    return [
        handler.preprocess(Item(key=str(i), text=c, fields={"question": q}), params)
        for i, (q, c) in enumerate(pairs)
    ]


def reference(reader: tuple[Any, Any], question: str, context: str, **kw: Any) -> Any:
    model, tokenizer = reader
    options = {"max_seq_len": 128, "doc_stride": 32, "max_answer_len": 15, **kw}
    (answer,) = answer_questions(
        model, tokenizer, [question], [context], handle_impossible_answer=True, **options
    )
    return answer


def assert_same(out: dict[str, Any], ref: Any) -> None:
    if ref.answer == "":  # v4's no-answer: "" at 0..0
        assert (out["answer"], out["start"], out["end"]) == (None, None, None)
    else:
        assert (out["answer"], out["start"], out["end"]) == (ref.answer, ref.start, ref.end)
    assert out["score"] == pytest.approx(ref.score, abs=1e-4)
    assert out["null_score"] == pytest.approx(ref.null_score, abs=1e-4)


def test_a_mixed_batch_equals_one_question_at_a_time(
    handler: AnswerQuestionHandler, reader: tuple[Any, Any], pairs: list[tuple[str, str]]
) -> None:
    batch = features(handler, pairs)
    assert handler.window == 128
    assert {len(f.windows) for f in batch} >= {1, 2}  # long contexts read in windows
    outputs = handler.predict(batch)
    for (question, context), out in zip(pairs, outputs, strict=True):
        assert_same(out, reference(reader, question, context))
    # what a user reads: the answers, wherever in the context they are
    for out, (question, context) in zip(outputs, pairs, strict=False):
        if question in ANSWERS:
            assert out["answer"] == ANSWERS[question] == context[out["start"] : out["end"]]


def test_an_unanswered_question_gets_a_null_answer_with_its_score(
    handler: AnswerQuestionHandler,
) -> None:
    (out,) = handler.predict(features(handler, [(UNANSWERED, CONTEXT)]))
    assert out["answer"] is None and out["start"] is None and out["end"] is None
    assert out["score"] == out["null_score"] > 0.5


@pytest.mark.parametrize("stride, max_answer_tokens", [(0, 15), (64, 1)])
def test_stride_and_answer_length_are_the_references(
    handler: AnswerQuestionHandler,
    reader: tuple[Any, Any],
    stride: int,
    max_answer_tokens: int,
) -> None:
    pairs = [(q, long_context(k)) for q, k in zip(ANSWERS, (4, 12, 20), strict=True)]
    batch = features(handler, pairs, stride=stride, max_answer_tokens=max_answer_tokens)
    for (q, c), out in zip(pairs, handler.predict(batch), strict=True):
        ref = reference(reader, q, c, doc_stride=stride, max_answer_len=max_answer_tokens)
        assert_same(out, ref)
        if max_answer_tokens == 1 and out["answer"] is not None:
            assert " " not in out["answer"]


def test_min_score_turns_an_unsure_answer_into_none(handler: AnswerQuestionHandler) -> None:
    pairs = [(q, CONTEXT) for q in ANSWERS]
    sure = handler.predict(features(handler, pairs))
    cut = max(o["score"] for o in sure)  # every other answer scores under it
    outputs = handler.predict(features(handler, pairs, min_score=cut))
    assert sum(o["answer"] is not None for o in outputs) == 1
    for out in outputs:
        if out["answer"] is None:
            assert out["score"] == out["null_score"] and out["start"] is None


@pytest.mark.parametrize(
    "fields, context, params, message",
    [
        (None, CONTEXT, {}, "has no question"),
        ({"question": "  "}, CONTEXT, {}, "the question is empty"),
        ({"question": "Who?"}, "", {}, "the context is empty"),
        ({"question": "Who?"}, None, {}, "has no context"),
        ({"question": "Who " * 150}, CONTEXT, {}, "ask a shorter question"),
        ({"question": "Who?"}, long_context(10), {"stride": 125}, "smaller stride"),
    ],
)
def test_bad_items_are_refused_one_by_one(
    handler: AnswerQuestionHandler,
    fields: Any,
    context: Any,
    params: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(InvalidInput, match=message):
        handler.preprocess(Item(key="k", text=context, fields=fields), params)


@pytest.mark.parametrize("stride", [125, 200, 256])
def test_a_large_stride_is_fine_where_the_context_fits(
    handler: AnswerQuestionHandler, stride: int
) -> None:
    (f,) = features(handler, [("Where does Mira Kaldsen work?", CONTEXT)], stride=stride)
    assert handler.predict([f])[0]["answer"] == "Tessaly Labs"


def test_an_answer_is_whole_words_even_when_the_model_points_inside_one(
    handler: AnswerQuestionHandler,
) -> None:
    """v4's align_to_words: one token allowed, the reader points at the first piece of
    "Tessaly" and answers the word, not the piece."""
    assert len(handler.tokenizer.tokenize("Tessaly")) > 1
    batch = features(handler, [("Where does Mira Kaldsen work?", CONTEXT)], max_answer_tokens=1)
    (out,) = handler.predict(batch)
    assert out["answer"] == "Tessaly" == CONTEXT[out["start"] : out["end"]]


def test_no_forward_pass_takes_more_than_a_slice_of_windows(
    handler: AnswerQuestionHandler,
) -> None:
    """A chunk of long contexts makes many windows: they go through the model
    WINDOWS_PER_PASS at most at a time, so memory stays bounded whatever the chunk."""
    sizes: list[int] = []
    hook = handler.model.register_forward_hook(
        lambda _m, _args, kwargs, _out: sizes.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    try:
        pairs = [("Where does Mira Kaldsen work?", long_context(20))] * 40
        batch = features(handler, pairs)
        assert sum(len(f.windows) for f in batch) > WINDOWS_PER_PASS
        outputs = handler.predict(batch)
    finally:
        hook.remove()
    assert max(sizes) <= WINDOWS_PER_PASS and {o["answer"] for o in outputs} == {"Tessaly Labs"}


def test_explanations_attribute_the_answer_to_its_words(
    handler: AnswerQuestionHandler,
) -> None:
    pairs = [
        ("What is the capital of Veltria?", CONTEXT),
        ("Where does Mira Kaldsen work?", long_context(10)),
        (UNANSWERED, CONTEXT),
    ]
    batch: list[QuestionFeatures] = features(handler, pairs)
    outputs = handler.predict(batch)
    explanations = handler.explain(batch, outputs, steps=16, internal_batch_size=64)
    assert [e.status for e in explanations] == [ExplanationStatus.OK] * 3
    capital, work, unanswered = explanations
    detail = capital.detail or {}
    assert detail["question_words"] == 7  # What is the capital of Veltria ?
    assert capital.tokens[:7] == ["What", "is", "the", "capital", "of", "Veltria", "?"]
    assert len(capital.tokens) == len(capital.attributions) == len(detail["offsets"])
    assert detail["answer"] == {"text": "Orbon", "start": 26, "end": 31}
    assert capital.target == "Orbon"
    # the context's words carry their characters: the report colours the context itself
    context_words = list(zip(capital.tokens[7:], detail["offsets"][7:], strict=True))
    assert all(CONTEXT[s:e] == w for w, (s, e) in context_words)
    # the context word that pushed hardest towards the answer is in the answer's own
    # sentence (the fact read), not in the others
    for expl, context, sentence in (
        (capital, CONTEXT, "The capital of Veltria is Orbon."),
        (work, long_context(10), "Mira Kaldsen works at Tessaly Labs."),
    ):
        n = (expl.detail or {})["question_words"]
        offsets = (expl.detail or {})["offsets"][n:]
        best = max(range(len(offsets)), key=lambda p: expl.attributions[n + p])
        at = context.index(sentence)
        assert at <= offsets[best][0] < at + len(sentence), expl.tokens[n + best]
    window = (work.detail or {})["window"]  # the window explained is one holding the answer
    assert window["count"] == 2
    answer = (work.detail or {})["answer"]
    assert window["start"] <= answer["start"] < answer["end"] <= window["end"]
    assert unanswered.target == "no answer" and (unanswered.detail or {})["answer"] is None
    assert "[CLS]" in (unanswered.detail or {})["logits"]


def test_explain_works_on_features_predict_never_saw(handler: AnswerQuestionHandler) -> None:
    """A retried explanation may get fresh features: the answer's window is found again."""
    pairs = [("When does order 4417 ship?", CONTEXT)]
    outputs = handler.predict(features(handler, pairs))
    (expl,) = handler.explain(features(handler, pairs), outputs, 8, 8)
    assert expl.status == ExplanationStatus.OK and expl.target == "Tuesday"
