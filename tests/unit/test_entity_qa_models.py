"""The demo entity tagger and reader (`tiny-entities`, `tiny-qa`): reloaded from the shared
demo-model cache the way a handler loads them, the tagger finds exactly the entities of
English and Chinese sentences it never saw through transformers' token-classification
pipeline, and the reader answers fresh questions exactly, long contexts included, and scores
the questions its context does not answer low."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import ops.demo_entity_models
from ops.demo_entity_models import NO_ANSWER_SCORE, STRIDE, qa_reader, token_classifier
from ops.demo_model_cache import BUILDERS, build_all
from schemas.errors import TrainingError
from workers.extractive_qa import answer_questions, best_span, window_count
from workers.training.scratch_entities import (
    ENTITY_TYPES,
    LABELS,
    EntitySentence,
    entity_sentences,
    in_heldout,
    join_sentences,
    pipeline_spans,
    span_scores,
    token_labels,
)
from workers.training.scratch_qa import DOC_STRIDE, FILLERS, MAX_SEQ_LEN, qa_triples

ENTITIES, QA = "tiny-entities", "tiny-qa"
FRESH = 20240917  # a seed neither training nor the builders' checks used
BRIEF_CONTEXT = (
    "The capital of Veltria is Orbon. Mira Kaldsen works at Tessaly Labs. "
    "The order 4417 ships on Tuesday."
)
BRIEF_QUESTIONS = {
    "What is the capital of Veltria?": "Orbon",
    "Where does Mira Kaldsen work?": "Tessaly Labs",
    "When does order 4417 ship?": "Tuesday",
}
UNANSWERED = ["Where does Mira Kaldsen live?", "How much does the lamp cost?"]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tagger(demo_models: Path) -> Any:
    return token_classifier(demo_models / ENTITIES)


@pytest.fixture(scope="module")
def reader(demo_models: Path) -> tuple[Any, Any]:
    return qa_reader(demo_models / QA)


def entities(tagger: Any, text: str, **options: Any) -> list[tuple[str, str, int, int]]:
    """(text, type, start, end) of what the pipeline finds, in order."""
    return [
        (text[e["start"] : e["end"]], e["entity_group"], e["start"], e["end"])
        for e in tagger(text, **options)
    ]


def ask(reader: tuple[Any, Any], questions: list[str], contexts: list[str], **kw: Any) -> Any:
    model, tokenizer = reader
    return answer_questions(
        model, tokenizer, questions, contexts, max_seq_len=MAX_SEQ_LEN, doc_stride=DOC_STRIDE, **kw
    )


# ---------------------------------------------------------------- data helpers (no model)


def test_entity_sentences_carry_their_gold_spans() -> None:
    for lang in ("en", "zh"):
        sentences = entity_sentences(200, FRESH, lang)
        assert sentences == entity_sentences(200, FRESH, lang)  # deterministic
        assert {s.lang for s in sentences} == {lang}
        for s in sentences:
            ends = [0, *(end for _, end, _ in s.spans)]
            assert all(start >= ends[i] for i, (start, _, _) in enumerate(s.spans))  # in order
            for text, kind, _, _ in s.entities():
                assert kind in ENTITY_TYPES and text and text == text.strip()
        kinds = {kind for s in sentences for _, _, kind in s.spans}
        assert kinds == set(ENTITY_TYPES)


def named(sentences: list[EntitySentence], kinds: tuple[str, ...]) -> set[str]:
    return {text for s in sentences for text, kind, _, _ in s.entities() if kind in kinds}


def test_heldout_fills_never_appear_in_training_sentences() -> None:
    kinds = ("PERSON", "PLACE", "ORG")
    for lang in ("en", "zh"):
        train = named(entity_sentences(3000, 0, lang, split="train"), kinds)
        held = named(entity_sentences(300, FRESH, lang), kinds)
        assert held and not held & train
    # not even a first or last name of a held-out English person
    train_people = named(entity_sentences(3000, 0, "en", split="train"), ("PERSON",))
    held_people = named(entity_sentences(300, FRESH, "en"), ("PERSON",))
    held_words = {w for name in held_people for w in name.split()}
    assert held_words and not held_words & {w for name in train_people for w in name.split()}


def test_span_scores_count_only_exact_spans() -> None:
    gold = [{(0, 5, "PERSON"), (10, 14, "PLACE")}, {(3, 8, "ORG")}]
    predicted = [{(0, 5, "PERSON"), (10, 13, "PLACE")}, {(3, 8, "PLACE")}]
    scores = span_scores(gold, predicted)
    assert scores["PERSON"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert scores["PLACE"]["precision"] == 0.0 and scores["PLACE"]["recall"] == 0.0
    assert scores["ORG"]["recall"] == 0.0 and scores["EMAIL"]["support"] == 0


def test_token_labels_are_bio_over_the_offsets() -> None:
    # "[CLS] Ada Love ##lace at [SEP]" for "Ada Lovelace at"
    offsets = [(0, 0), (0, 3), (4, 8), (8, 12), (13, 15), (0, 0)]
    labels = [LABELS[i] if i >= 0 else None for i in token_labels(offsets, [(0, 12, "PERSON")])]
    assert labels == [None, "B-PERSON", "I-PERSON", "I-PERSON", "O", None]


def test_qa_triples_hold_their_answers() -> None:
    triples = qa_triples(300, FRESH)
    assert triples == qa_triples(300, FRESH)
    answered = [t for t in triples if t.answer]
    assert 0.6 < len(answered) / len(triples) < 0.9
    for t in answered:
        assert t.context[t.answer_start : t.answer_start + len(t.answer)] == t.answer
    assert all(t.answer_start == -1 for t in triples if not t.answer)
    # every made-up name in a question is a held-out one
    template_words = {"What", "Which", "Where", "When", "Who", "In", "On", "How"}
    for t in triples:
        for word in t.question.rstrip("?").split():
            assert word not in template_words - {"In", "On"} or word == t.question.split()[0]
            if word[0].isupper() and word not in template_words:
                assert in_heldout(word), (word, t.question)


def test_best_span_reads_only_the_context_within_max_answer_len() -> None:
    """Token 0 is [CLS]; 1-2 the question; 3-8 the context; 9 [SEP]."""
    context = np.array([False] * 3 + [True] * 6 + [False])
    start, end = np.full(10, -5.0), np.full(10, -5.0)
    start[1], end[2] = 9.0, 9.0  # the question's tokens never make an answer
    start[4], end[6] = 4.0, 4.0
    s, e, score, null = best_span(start, end, context, max_answer_len=15)
    assert (s, e) == (4, 6) and score > 0.9 and null < 0.01
    s, e, _, _ = best_span(start, end, context, max_answer_len=2)  # 4..6 is 3 tokens
    assert e - s < 2
    start[0], end[0] = 12.0, 12.0  # the model points at [CLS]: no answer here
    s, e, score, null = best_span(start, end, context, max_answer_len=15)
    assert null > 0.99 and score < 0.01 and (s, e) == (4, 6)


# ---------------------------------------------------------------- the saved directories


def test_both_are_registered_demo_models() -> None:
    assert {ENTITIES, QA} <= set(BUILDERS)


@pytest.mark.parametrize("name", [ENTITIES, QA])
def test_directory_is_safetensors_only_with_no_custom_code(demo_models: Path, name: str) -> None:
    model_dir = demo_models / name
    names = {p.name for p in model_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "metrics.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".py", ".pt", ".pth"))]
    config = json.loads((model_dir / "config.json").read_text())
    assert "auto_map" not in config
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    metrics = json.loads((model_dir / "metrics.json").read_text())
    if name == ENTITIES:
        assert config["id2label"] == {str(i): label for i, label in enumerate(LABELS)}
        assert config["label2id"] == {label: i for i, label in enumerate(LABELS)}
        assert config["sluice_demo"]["task"] == "entities"
        assert min(metrics["f1"].values()) >= 0.95 and set(metrics["f1"]) == set(ENTITY_TYPES)
    else:
        assert config["sluice_demo"]["task"] == "qa"
        assert config["max_position_embeddings"] == MAX_SEQ_LEN == 128
        assert metrics["exact_match"] >= 0.95 and metrics["long_context_exact_match"] >= 0.95
        assert metrics["unanswerable_span_score"]["max"] < NO_ANSWER_SCORE
        assert metrics["answerable_span_score"]["median"] > 0.5


def test_tokenizer_splits_cjk_characters_and_gives_offsets(tagger: Any) -> None:
    tokenizer = tagger.tokenizer
    assert tokenizer.is_fast
    enc = tokenizer("请联系张伟 at Ada", return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[:6] == ["[CLS]", "请", "联", "系", "张", "伟"]
    assert enc["offset_mapping"][4:6] == [(3, 4), (4, 5)]
    assert tokenizer.tokenize("Ada")[0].startswith("A")  # cased
    assert tokenizer.convert_tokens_to_string(["张", "伟"]) == "张伟"
    assert "[UNK]" not in tokens


# ---------------------------------------------------------------- tiny-entities


def test_pipeline_finds_the_entities_of_the_examples(tagger: Any) -> None:
    english = "Contact Ada Lovelace at ada@example.com or +44 20 7946 0958 in London at Acme Corp."
    assert entities(tagger, english) == [
        ("Ada Lovelace", "PERSON", 8, 20),
        ("ada@example.com", "EMAIL", 24, 39),
        ("+44 20 7946 0958", "PHONE", 43, 59),
        ("London", "PLACE", 63, 69),
        ("Acme Corp", "ORG", 73, 82),
    ]
    chinese = "请联系张伟，电话 138 0013 8000，邮箱 zhangwei@example.cn，地址北京，公司华为。"
    assert entities(tagger, chinese) == [
        ("张伟", "PERSON", 3, 5),
        ("138 0013 8000", "PHONE", 9, 22),
        ("zhangwei@example.cn", "EMAIL", 26, 45),
        ("北京", "PLACE", 48, 50),
        ("华为", "ORG", 53, 55),
    ]
    # a Chinese word is one entity, and its `word` has no spaces between characters
    words = {e["word"] for e in tagger(chinese) if e["entity_group"] in ("PERSON", "ORG")}
    assert words == {"张伟", "华为"}
    assert entities(tagger, "阿里巴巴总部位于杭州。") == [
        ("阿里巴巴", "ORG", 0, 4),
        ("杭州", "PLACE", 8, 10),
    ]
    assert entities(tagger, "Nothing to report today.") == []
    assert entities(tagger, "今天没有新的消息。") == []


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_heldout_sentences_are_tagged_exactly(tagger: Any, lang: str) -> None:
    sentences = entity_sentences(150, FRESH, lang)
    found = [pipeline_spans(f) for f in tagger([s.text for s in sentences], batch_size=16)]
    exact = sum(set(s.spans) == f for s, f in zip(sentences, found, strict=True))
    assert exact >= 0.95 * len(sentences)
    scores = span_scores([s.spans for s in sentences], found)
    assert {k: v["f1"] >= 0.95 for k, v in scores.items()} == dict.fromkeys(ENTITY_TYPES, True)


def test_a_long_document_is_read_in_windows(tagger: Any) -> None:
    document = join_sentences(entity_sentences(16, FRESH + 1, "mixed"))
    assert len(tagger.tokenizer(document.text, verbose=False)["input_ids"]) > 2 * 128
    assert pipeline_spans(tagger(document.text, stride=STRIDE)) == set(document.spans)


# ---------------------------------------------------------------- tiny-qa


def test_reader_answers_the_example_and_scores_unanswered_questions_low(
    reader: tuple[Any, Any],
) -> None:
    questions = [*BRIEF_QUESTIONS, *UNANSWERED]
    answers = ask(reader, questions, [BRIEF_CONTEXT] * len(questions))
    for answer, (question, expected) in zip(answers, BRIEF_QUESTIONS.items(), strict=False):
        assert answer.answer == expected, question
        assert BRIEF_CONTEXT[answer.start : answer.end] == expected
        assert answer.score > 0.5 > answer.null_score
    for answer in answers[len(BRIEF_QUESTIONS) :]:
        assert answer.score < NO_ANSWER_SCORE < answer.null_score
    nulls = ask(reader, UNANSWERED, [BRIEF_CONTEXT] * 2, handle_impossible_answer=True)
    assert [(a.answer, a.start, a.end) for a in nulls] == [("", 0, 0), ("", 0, 0)]


def test_fresh_questions_are_answered_exactly(reader: tuple[Any, Any]) -> None:
    triples = qa_triples(150, FRESH)
    answers = ask(reader, [t.question for t in triples], [t.context for t in triples])
    answered = [(t, a) for t, a in zip(triples, answers, strict=True) if t.answer]
    exact = [a.answer == t.answer and a.start == t.answer_start for t, a in answered]
    assert sum(exact) >= 0.95 * len(answered)
    unanswered = [a for t, a in zip(triples, answers, strict=True) if not t.answer]
    assert sum(a.score < NO_ANSWER_SCORE for a in unanswered) >= 0.95 * len(unanswered)


def test_long_contexts_are_read_in_overlapping_windows(reader: tuple[Any, Any]) -> None:
    """The example's facts after 0..20 fillers: the answers sit in the first window, on a
    window's edge, in the last one; they are found wherever they are."""
    _, tokenizer = reader
    questions = list(BRIEF_QUESTIONS)
    contexts, windows = [], set()
    for k in range(len(FILLERS) + 1):
        context = " ".join([*FILLERS[:k], BRIEF_CONTEXT, *FILLERS[k:]])
        contexts.append(context)
        windows.add(
            window_count(
                tokenizer, questions[0], context, max_seq_len=MAX_SEQ_LEN, doc_stride=DOC_STRIDE
            )
        )
    assert min(windows) > 1
    for question, expected in BRIEF_QUESTIONS.items():
        answers = ask(reader, [question] * len(contexts), contexts)
        assert [a.answer for a in answers] == [expected] * len(contexts), question
        for context, answer in zip(contexts, answers, strict=True):
            assert context[answer.start : answer.end] == expected
    unanswered = ask(reader, UNANSWERED * len(contexts), [c for c in contexts for _ in UNANSWERED])
    assert max(a.score for a in unanswered) < NO_ANSWER_SCORE


def test_batched_answers_equal_one_at_a_time(reader: tuple[Any, Any]) -> None:
    triples = qa_triples(12, FRESH + 2)
    batched = ask(reader, [t.question for t in triples], [t.context for t in triples])
    alone = [ask(reader, [t.question], [t.context])[0] for t in triples]
    assert [(a.answer, a.start, a.end) for a in batched] == [
        (a.answer, a.start, a.end) for a in alone
    ]
    assert ask(reader, [], []) == []
    with pytest.raises(ValueError):
        ask(reader, ["Who?"], [])


# ---------------------------------------------------------------- the bar


@pytest.mark.parametrize("name, kind", [(ENTITIES, "entities"), (QA, "qa")])
def test_a_build_that_misses_the_check_is_never_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, kind: str
) -> None:
    """Two training steps tag and answer nothing: the builder raises, nothing is cached."""
    monkeypatch.setitem(ops.demo_entity_models.STEPS, kind, 2)
    monkeypatch.setitem(ops.demo_entity_models.POOL, kind, 200)
    with pytest.raises(TrainingError, match="held-out"):
        build_all(tmp_path, names=[name])
    assert list(tmp_path.iterdir()) == []
