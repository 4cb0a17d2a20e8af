"""Text explanations as fast as a direct Captum call, and the faster option for large jobs:
Captum's passes are sized by padded tokens (a batch of short texts is explained in one pass,
not one pass per step), the attributions are those of one direct Captum call whatever the
passes, long texts never make a pass over the token budget, and SLUICE_EXPLAIN_STEPS reaches
the model actor's explanations."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch
from captum.attr import LayerIntegratedGradients

from producers.model_refs import resolve
from schemas.catalog import load_catalog
from schemas.explainer_settings import job_explainer
from schemas.jobs import ExplainPolicy, Item
from schemas.media_refs import MediaLimits
from schemas.settings import Settings
from schemas.states import ExplanationStatus
from workers.explain import passes
from workers.explain.passes import rows_per_pass
from workers.explain.spans import baseline_ids
from workers.explain.text import explain_tokens
from workers.handlers.text import ZeroShotHandler
from workers.runtime.model_core import ModelCore
from workers.runtime.options import actor_options

LABELS = ["billing", "shipping", "technical"]
TEXTS = [
    "I was charged twice for my subscription this month.",
    "Where is my parcel? The tracking has not moved for a week.",
    "The app crashes every time I open the settings page.",
    "我的发票金额不对，请核实。",
]
STEPS = 8  # few, to keep the test quick; the sizing is the same at 24
ALREADY_BATCHED = 4  # what the actor passes as internal_batch_size: its explain batch size


@pytest.fixture(scope="module")
def zero_shot(tmp_path_factory: pytest.TempPathFactory) -> ZeroShotHandler:
    spec = load_catalog().get("zero-shot-text")
    path = resolve("all-MiniLM-L6-v2", spec, tmp_path_factory.mktemp("models")).path
    handler = ZeroShotHandler()
    handler.setup(str(Path(path)), "cpu")
    handler.label_vectors(tuple(LABELS))  # encoded now, so no test counts those passes
    return handler


def features(handler: ZeroShotHandler, texts: list[str]) -> list[Any]:
    return [handler.preprocess(Item(key=str(n), text=t), {"labels": LABELS})
            for n, t in enumerate(texts)]  # fmt: skip


def forward_for(handler: ZeroShotHandler) -> Any:
    prompts = tuple(LABELS)

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return handler.probabilities(handler.sentence_embeddings(ids, mask), prompts)

    return forward


def model_passes(handler: ZeroShotHandler, run: Any) -> list[tuple[int, int]]:
    """(rows, padded length) of every forward pass of the model while `run()` runs."""
    shapes: list[tuple[int, int]] = []

    def record(_module: Any, args: Any, kwargs: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        shapes.append((int(ids.shape[0]), int(ids.shape[1])))

    hook = handler.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        run()
    finally:
        hook.remove()
    return shapes


def direct_captum(handler: ZeroShotHandler, feats: list[Any], targets: list[int]) -> Any:
    """One LayerIntegratedGradients call over the whole batch, every step in one pass."""
    ids, mask = handler.pad([f.windows[0] for f in feats])
    lig = LayerIntegratedGradients(forward_for(handler), handler.embedding_layer())
    attributions, delta = lig.attribute(
        inputs=ids,
        baselines=baseline_ids(handler.tokenizer, ids),
        additional_forward_args=(mask,),
        target=targets,
        n_steps=STEPS,
        return_convergence_delta=True,
    )
    return attributions.sum(dim=-1).detach(), delta.detach()


def sluice_explain(handler: ZeroShotHandler, feats: list[Any], targets: list[int]) -> Any:
    return explain_tokens(
        handler.token_model(),
        forward_for(handler),
        [f.windows for f in feats],
        [[1.0]] * len(feats),
        targets,
        STEPS,
        ALREADY_BATCHED,
        [LABELS[t] for t in targets],
    )


def test_pass_sizes_follow_the_token_budget():
    budget = passes.TOKENS_PER_PASS
    # 8 short texts (20 tokens), 24 steps: 3840 tokens, all in one pass
    assert rows_per_pass(8, 20, 24) == 8 * 24
    # 8 texts of 40 tokens: two passes of 12 steps, not one of 12 and a tiny one
    assert rows_per_pass(8, 40, 24) == 8 * 12
    # long texts: within the budget, a whole number of steps per pass
    rows = rows_per_pass(8, 128, 24)
    assert rows % 8 == 0 and rows * 128 <= budget
    # a batch too long for the budget still runs one step of every input per pass
    assert rows_per_pass(8, 512, 24) == 8
    assert rows_per_pass(16, 512, 24) == 16


def test_a_batch_of_short_texts_is_explained_in_as_many_passes_as_one_direct_call(
    zero_shot: ZeroShotHandler,
):
    """The actor passes its explain batch size as internal_batch_size; that used to make one
    pass of that many rows per step (24 passes at the default steps), which ran at a third
    of a direct call's speed on short texts."""
    feats = features(zero_shot, TEXTS)
    targets = [0, 1, 2, 0]
    direct = model_passes(zero_shot, lambda: direct_captum(zero_shot, feats, targets))
    ours = model_passes(zero_shot, lambda: sluice_explain(zero_shot, feats, targets))
    assert len(ours) == len(direct)
    assert max(rows for rows, _ in ours) == len(TEXTS) * STEPS


def test_attributions_in_several_passes_equal_one_direct_call(
    zero_shot: ZeroShotHandler, monkeypatch: pytest.MonkeyPatch
):
    feats = features(zero_shot, TEXTS)
    targets = [0, 1, 2, 0]
    tokens, deltas = direct_captum(zero_shot, feats, targets)
    length = tokens.shape[1]
    # a budget of 3 steps per pass: three passes (3, 3 and 2 steps)
    monkeypatch.setattr(passes, "TOKENS_PER_PASS", len(TEXTS) * length * 3)
    explanations: list[Any] = []
    shapes = model_passes(
        zero_shot, lambda: explanations.extend(sluice_explain(zero_shot, feats, targets))
    )
    assert sorted(rows for rows, _ in shapes if rows > len(TEXTS)) == [8, 12, 12]
    for f, e, row, delta in zip(feats, explanations, tokens, deltas, strict=True):
        assert e.status == ExplanationStatus.OK
        words: dict[int, float] = {}  # the direct call's token scores summed per word
        for position, word in enumerate(f.windows[0].word_ids):
            if word is not None:
                words[word] = words.get(word, 0.0) + float(row[position])
        assert torch.allclose(
            torch.tensor(e.attributions), torch.tensor(list(words.values())), atol=1e-5
        )
        assert e.convergence_delta == pytest.approx(float(delta), abs=1e-5)


@pytest.mark.parametrize("job_steps, expected", [(None, 8), (6, 6)])
def test_the_jobs_steps_or_else_the_environments_reach_the_actors_explanations(
    zero_shot: ZeroShotHandler, monkeypatch: pytest.MonkeyPatch, job_steps: Any, expected: int
):
    spec = load_catalog().get("zero-shot-text")
    default = job_explainer(spec, Settings(), "all", None)
    assert default == {"method": "layer_integrated_gradients", "steps": spec.explainer.steps}  # type: ignore[union-attr]
    monkeypatch.setenv("SLUICE_EXPLAIN_STEPS", "8")
    settings = Settings()
    options = actor_options(settings, spec)
    recorded = job_explainer(spec, settings, "all", job_steps)
    assert recorded == {"method": "layer_integrated_gradients", "steps": expected}
    steps_seen: list[int] = []
    explain = zero_shot.explain

    def spy(batch: Any, outputs: Any, steps: int, internal_batch_size: int) -> Any:
        steps_seen.append(steps)
        return explain(batch, outputs, steps, internal_batch_size)

    monkeypatch.setattr(zero_shot, "explain", spy)
    core = ModelCore(zero_shot, "cpu", options)
    try:
        items = [Item(key=str(n), text=t) for n, t in enumerate(TEXTS[:2])]
        outcomes = asyncio.run(
            core.process(
                "job",
                items,
                {"labels": LABELS, "explainer": recorded},
                ExplainPolicy.parse("all"),
                MediaLimits(),
            )
        )
    finally:
        core.close()
    assert steps_seen == [expected]
    assert all(o.explanation and o.explanation.status == ExplanationStatus.OK for o in outcomes)
