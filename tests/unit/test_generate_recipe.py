"""The generate recipe without Ray: which model families DP-SGD trains (measured on the model
by Opacus itself), what the arrays hold, and that training reads prompts exactly as the
generate handler writes them."""

from pathlib import Path
from typing import Any

import pytest
import torch

from schemas.errors import TrainingError
from schemas.media_refs import MediaLimits
from schemas.training import DataSource, DPSpec, TrainSpec
from tests.generation_bases import build, word_rows
from workers.training.recipes.generate import IGNORE, GenerateRecipe
from workers.training.recipes.text_pairs import prompt_ids

KINDS = ("llama", "gpt2", "t5", "bart", "mixtral")


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    return {kind: build(kind, root / kind) for kind in KINDS}


def spec_for(base: Path, dp: bool = False, **options: Any) -> TrainSpec:
    return TrainSpec(
        name="m",
        task="generate",
        recipe="workers.training.recipes.generate:GenerateRecipe",
        target="text",
        classifier=False,
        input_columns=["text"],
        data=DataSource(file="pairs.jsonl"),
        label_column="target",
        base=str(base),
        dp=DPSpec(epsilon=8.0, delta=1e-5) if dp else None,
        **options,
    )


def prepared(base: Path, rows: list[dict[str, Any]], dp: bool = False) -> Any:
    spec = spec_for(base, dp)
    recipe = GenerateRecipe(spec)
    return recipe, recipe.prepare(spec, rows, MediaLimits())


@pytest.mark.parametrize(
    ("kind", "frozen"),
    [
        ("llama", []),  # LlamaRMSNorm through Opacus's functorch path: exact
        ("gpt2", ["transformer.wpe"]),  # Conv1D exact; the position table has no batch dim
        (
            "t5",
            [
                "decoder.block.0.layer.0.SelfAttention.relative_attention_bias",
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias",
            ],
        ),
        ("bart", ["model.decoder.embed_positions", "model.encoder.embed_positions"]),
    ],
)
def test_dp_trains_these_families_with_their_position_tables_frozen(
    bases: dict[str, Path], kind: str, frozen: list[str]
):
    recipe, data = prepared(bases[kind], word_rows(20, seed=5), dp=True)
    assert sorted(data.meta["dp_frozen"]) == frozen
    model = recipe.build(spec_for(bases[kind], True), data.meta)
    still = {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert still == set(frozen)


def test_dp_refuses_a_mixture_of_experts_naming_the_layer(bases: dict[str, Path]):
    with pytest.raises(TrainingError) as caught:
        prepared(bases["mixtral"], word_rows(20, seed=5), dp=True)
    message = str(caught.value)
    assert message.startswith("--dp-epsilon: Opacus cannot compute exact per-sample gradients")
    assert "MixtralForCausalLM's layers MixtralExperts" in message
    assert "Train it without --dp-epsilon" in message


def test_without_dp_nothing_is_frozen_or_probed(bases: dict[str, Path]):
    recipe, data = prepared(bases["mixtral"], word_rows(20, seed=5))
    assert data.meta["dp_frozen"] == {}
    model = recipe.build(spec_for(bases["mixtral"]), data.meta)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_training_reads_the_prompt_the_handler_writes_and_learns_only_the_target(
    bases: dict[str, Path], kind: str
):
    from workers.handlers.generate import GenerateHandler

    handler = GenerateHandler()
    handler.setup(str(bases[kind]), "cpu")
    tokenizer, eos = handler.tokenizer, handler.tokenizer.eos_token_id
    for text in ("a b c", "d", "h g"):
        assert prompt_ids(tokenizer, text) == handler.encode(text)[1]
    _, data = prepared(bases[kind], [{"text": "a b c", "target": "c b a"}] * 2)
    ids, labels = data.train["input_ids"][0].tolist(), data.train["labels"][0].tolist()
    learnt = [t for t in labels if t != IGNORE]
    assert tokenizer.decode(learnt[:-1]) == "c b a" and learnt[-1] == eos
    prompt = handler.encode("a b c")[1]
    if kind == "llama":  # one sequence: the chat prompt (no loss on it), the target, eos
        assert tokenizer.decode(prompt) == "<s> <|user|> a b c <|end|> <|assistant|>"
        assert ids == [*prompt, *learnt] and labels == [IGNORE] * len(prompt) + learnt
        assert data.heldout["prompt_ids"][0].tolist() == prompt
    else:  # the encoder reads the input, the decoder writes the target and eos
        assert ids == prompt and tokenizer.decode(prompt) == "a b c </s>"
        assert data.train["decoder_input_ids"][0].tolist() == [tokenizer.pad_token_id, *learnt[:-1]]


def test_an_empty_poisson_batch_has_zero_loss_and_gradients(bases: dict[str, Path]):
    for kind in ("llama", "t5"):
        recipe, data = prepared(bases[kind], word_rows(10, seed=6))
        model = recipe.build(spec_for(bases[kind]), data.meta)
        empty = {k: torch.as_tensor(v[:0]) for k, v in data.train.items()}
        loss = recipe.loss(model, empty)
        loss.backward()
        assert float(loss.detach()) == 0.0
        assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_rows_longer_than_the_model_reads_are_named(bases: dict[str, Path]):
    rows = [{"text": "a", "target": "b"}, {"text": " ".join("a" * 60), "target": "b"}]
    with pytest.raises(ValueError, match=r"over the model's 48 positions: row 2 \(66 tokens\)"):
        prepared(bases["llama"], rows)
