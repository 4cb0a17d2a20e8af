"""Generation explanations (feature ablation over the prompt's tokens) on the demo spelling
models, which write "four zero seven" for "Spell: 4 0 7": each digit is what its word was
written from, so hiding a digit must make its word unlikely."""

import math
from pathlib import Path
from typing import Any

import pytest

from schemas.catalog import load_catalog
from schemas.jobs import Item
from schemas.states import ExplanationStatus
from workers.explain import generation
from workers.explain.generation import END, PAD, explain_generations
from workers.handlers import handler_for

MODELS = ["tiny-spell-seq2seq", "tiny-spell-causal"]
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PROMPTS = ["4 0 7", "9 1 5 2 6 3 8", "6", "3 8 0 2 7 5 9 1 4 6"]  # distinct digits each
PARAMS = {"prompt": "Spell: {text}", "max_new_tokens": 16}


@pytest.fixture(scope="module", params=MODELS)
def handler(request: pytest.FixtureRequest, demo_models: Path) -> Any:
    h = handler_for(load_catalog().get("generate"))
    h.setup(str(demo_models / request.param), "cpu")
    return h


def generated(handler: Any, texts: list[str]) -> tuple[list[Any], list[dict[str, Any]]]:
    features = [handler.preprocess(Item(key=str(n), text=t), PARAMS) for n, t in enumerate(texts)]
    outputs = handler.predict(features)
    assert [o["text"] for o in outputs] == [
        " ".join(WORDS[int(d)] for d in t.split()) for t in texts
    ]
    return features, outputs


def test_one_finite_attribution_per_prompt_token(handler: Any):
    features, outputs = generated(handler, PROMPTS)
    explanations = handler.explain(features, outputs, 1, 8)
    assert len(explanations) == len(PROMPTS)
    for text, output, e in zip(PROMPTS, outputs, explanations, strict=True):
        assert e.status == ExplanationStatus.OK, e.error
        assert e.method == "feature_ablation"
        assert e.target == output["text"]
        # the prompt's own tokens only: no chat-template markers, BOS or EOS
        assert e.tokens == ["Spell", ":", *text.split()]
        assert len(e.attributions) == len(e.tokens)
        assert all(math.isfinite(a) for a in e.attributions)
        assert e.convergence_delta is None
        detail = e.detail or {}
        assert detail["target_tokens"] == [*output["text"].split(), END]
        assert detail["target_log_prob"] <= 0
        rows = detail["per_output_token"]
        assert len(rows) == len(detail["target_tokens"])
        assert all(len(r) == len(e.tokens) for r in rows)
        # the per-output-token drops add up to the whole sequence's
        for n, total in enumerate(e.attributions):
            assert sum(r[n] for r in rows) == pytest.approx(total, rel=1e-2, abs=1e-2)
        e.model_dump_json()  # storable as it is


def test_hiding_a_digit_makes_its_word_unlikely(handler: Any):
    features, outputs = generated(handler, PROMPTS)
    for text, e in zip(PROMPTS, explain_generations(handler, features, outputs), strict=True):
        rows = (e.detail or {})["per_output_token"]
        digits = text.split()
        columns = [e.tokens.index(d) for d in digits]
        for j, column in enumerate(columns):
            # log p(word j) drops by over 2 nats (the word at most 1/7 as likely) when its
            # digit is hidden, more than when any other digit is, and so does the output's
            assert rows[j][column] > 2.0, (text, j, rows[j])
            assert max(columns, key=rows[j].__getitem__) == column, (text, j, rows[j])
            assert e.attributions[column] > 2.0


def test_a_batch_explains_each_item_as_alone(handler: Any):
    features, outputs = generated(handler, PROMPTS)
    together = explain_generations(handler, features, outputs)
    for f, o, e in zip(features, outputs, together, strict=True):
        (alone,) = explain_generations(handler, [f], [o])
        assert alone.tokens == e.tokens
        assert alone.attributions == pytest.approx(e.attributions, rel=1e-3, abs=1e-3)


def test_an_output_that_is_only_its_end_is_explained_and_nothing_at_all_is_said(handler: Any):
    features, outputs = generated(handler, ["4 0 7", "4 0 7"])
    only_end = {**outputs[0], "text": "", "completion_tokens": 0, "finish_reason": "stop"}
    nothing = {**outputs[1], "text": "", "completion_tokens": 0, "finish_reason": "stop_string"}
    ended, empty = explain_generations(handler, features, [only_end, nothing])
    assert ended.status == ExplanationStatus.OK
    assert (ended.detail or {})["target_tokens"] == [END]
    assert len(ended.attributions) == 5 and all(math.isfinite(a) for a in ended.attributions)
    assert empty.status == ExplanationStatus.OK
    assert empty.tokens == [] and empty.attributions == []
    assert "nothing was generated" in (empty.detail or {})["empty"]


def test_long_prompts_are_ablated_in_spans(handler: Any, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(generation, "MAX_FEATURES", 4)
    features, outputs = generated(handler, ["3 8 0 2 7 5 9 1 4 6"])  # 12 prompt tokens
    (e,) = explain_generations(handler, features, outputs)
    assert e.tokens == ["Spell: 3", "8 0 2", "7 5 9", "1 4 6"]
    assert len(e.attributions) == 4 and all(math.isfinite(a) for a in e.attributions)
    assert "ablated 3 adjacent at a time" in (e.detail or {})["spans"]


def test_padding_ablation_matches_captums_llm_attribution(demo_models: Path):
    """Captum's LLMAttribution handles decoder-only models, one prompt at a time: with the
    same baseline (the padding token) it gives the same per-output-token attributions."""
    from captum.attr import FeatureAblation, LLMAttribution, TextTokenInput

    h: Any = handler_for(load_catalog().get("generate"))
    h.setup(str(demo_models / "tiny-spell-causal"), "cpu")
    features, outputs = generated(h, PROMPTS)
    ours = explain_generations(h, features, outputs, ablation=PAD)
    captum = LLMAttribution(FeatureAblation(h.model), h.tokenizer)
    for f, o, e in zip(features, outputs, ours, strict=True):
        scaffolding = [i for i in f.ids if h.tokenizer.convert_ids_to_tokens(i) not in e.tokens]
        inp = TextTokenInput(f.text, h.tokenizer, baselines=h.pad_id, skip_tokens=scaffolding)
        assert inp.inp_tensor[0].tolist() == f.ids
        result = captum.attribute(inp, target=o["text"], forward_in_tokens=False)
        assert result.token_attr is not None
        rows = (e.detail or {})["per_output_token"][:-1]  # Captum's target has no end
        flat = [v for row in rows for v in row]
        assert result.token_attr.flatten().tolist() == pytest.approx(flat, rel=1e-2, abs=1e-2)


def test_without_per_output_token_detail_and_in_small_evaluations_the_totals_hold(
    handler: Any, monkeypatch: pytest.MonkeyPatch
):
    features, outputs = generated(handler, PROMPTS)
    full = explain_generations(handler, features, outputs)
    monkeypatch.setattr(generation, "MAX_DETAIL_CELLS", 1)  # totals only
    monkeypatch.setattr(generation, "ABLATION_CELLS", 1)  # one ablation per evaluation
    for e, f in zip(explain_generations(handler, features, outputs), full, strict=True):
        assert e.tokens == f.tokens
        assert e.attributions == pytest.approx(f.attributions, rel=1e-3, abs=1e-3)
        assert (e.detail or {})["per_output_token"] is None
        assert "over 1 values" in (e.detail or {})["per_output_token_left_out"]
