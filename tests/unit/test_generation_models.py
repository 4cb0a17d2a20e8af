"""The two demo text generators (`tiny-spell-seq2seq`, `tiny-spell-causal`): reloaded from the
shared demo-model cache the way the generate handler loads them, they spell digit strings they
never saw exactly, alone or in padded batches."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

import ops.demo_generation_models
from ops.demo_model_cache import BUILDERS, build_all
from schemas.errors import TrainingError
from workers.safe_loading import load_pretrained
from workers.training.scratch_generators import (
    CAUSAL_MAX_POSITIONS,
    MAX_DIGITS,
    SEQ2SEQ_MAX_POSITIONS,
    spell_digits,
    spell_prompt,
)

SEQ2SEQ, CAUSAL = "tiny-spell-seq2seq", "tiny-spell-causal"


class Loaded:
    """A model directory loaded as the generate handler loads it, with its way of encoding."""

    def __init__(self, model_dir: Path) -> None:
        self.dir = model_dir
        self.tokenizer = load_pretrained(AutoTokenizer, model_dir)
        self.causal = model_dir.name == CAUSAL
        auto = AutoModelForCausalLM if self.causal else AutoModelForSeq2SeqLM
        self.model = load_pretrained(auto, model_dir).eval()

    def prompt_ids(self, digits: str) -> list[int]:
        if self.causal:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": spell_prompt(digits)}],
                add_generation_prompt=True,
                tokenize=False,
            )
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(spell_prompt(digits))["input_ids"])

    def spell(self, texts: list[str]) -> list[str]:
        """Greedy outputs for a batch, padded on the left (causal) or right (encoder)."""
        rows = [self.prompt_ids(t) for t in texts]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids, mask = [], []
        for r in rows:
            fill = width - len(r)
            ids.append([pad] * fill + r if self.causal else r + [pad] * fill)
            mask.append([0] * fill + [1] * len(r) if self.causal else [1] * len(r) + [0] * fill)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=torch.tensor(ids),
                attention_mask=torch.tensor(mask),
                max_new_tokens=MAX_DIGITS + 1,
                do_sample=False,
            )
        if self.causal:
            out = out[:, width:]
        return [str(s) for s in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Models this small generate 10-40x faster on one thread than on two of a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module", params=[SEQ2SEQ, CAUSAL])
def loaded(request: pytest.FixtureRequest, demo_models: Path) -> Loaded:
    return Loaded(demo_models / request.param)


def fresh_texts(n: int = 300) -> list[str]:
    """Digit strings from a stream neither the training nor the builder's check used, every
    length 1..12 included, and some runs of one digit."""
    rng = random.Random(20240917)
    texts = [
        " ".join(str(rng.randrange(10)) for _ in range(rng.randint(1, MAX_DIGITS)))
        for _ in range(n)
    ]
    texts += [" ".join(str(rng.randrange(10)) for _ in range(k)) for k in range(1, MAX_DIGITS + 1)]
    return texts + ["0", "1 1", "7 7 7 7 7 7 7", "0 0 0 0 0 0 0 0 0 0 0 0"]


def test_spell_digits_and_prompt() -> None:
    assert spell_digits("4 0 7") == "four zero seven"
    assert spell_digits(" 9  1 ") == "nine one"
    assert spell_prompt("4 0 7") == spell_prompt([4, 0, 7]) == "Spell: 4 0 7"


def test_both_are_registered_demo_models() -> None:
    assert {SEQ2SEQ, CAUSAL} <= set(BUILDERS)


def test_directory_is_safetensors_only_with_no_custom_code(loaded: Loaded) -> None:
    names = {p.name for p in loaded.dir.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json"} <= names
    assert {"tokenizer.json", "tokenizer_config.json", "metrics.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".py", ".pt", ".pth"))]
    config = json.loads((loaded.dir / "config.json").read_text())
    assert "auto_map" not in config
    assert config["sluice_demo"]["task"] == "generate"
    metrics = json.loads((loaded.dir / "metrics.json").read_text())
    assert metrics["exact_match"] == 1.0 and metrics["batched_equals_unbatched"] is True
    expected = "BartForConditionalGeneration" if not loaded.causal else "LlamaForCausalLM"
    assert type(loaded.model).__name__ == expected


def test_fresh_prompts_are_spelled_exactly_alone_and_in_batches(loaded: Loaded) -> None:
    texts = fresh_texts()
    assert {len(t.split()) for t in texts} == set(range(1, MAX_DIGITS + 1))
    expected = [spell_digits(t) for t in texts]
    batched = loaded.spell(texts)
    assert batched == expected
    # a mixed-length handful one at a time: padding changes nothing
    alone = [t for t in texts if len(t.split()) in (1, 5, 12)][:12]
    assert [loaded.spell([t])[0] for t in alone] == [spell_digits(t) for t in alone]


def test_plain_generate_needs_no_extra_options(loaded: Loaded) -> None:
    """generation_config carries eos/pad (and the decoder start): a bare generate() call on
    the tokenizer's own encoding stops at EOS and decodes to the words."""
    tokenizer = loaded.tokenizer
    prompt = spell_prompt("3 1 4 1 5")
    if loaded.causal:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    enc = tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**enc, max_new_tokens=20, do_sample=False)
    new = out[0, enc["input_ids"].shape[1] :] if loaded.causal else out[0, 1:]
    assert new.tolist()[-1] == tokenizer.eos_token_id  # stopped on its own
    assert tokenizer.decode(new, skip_special_tokens=True) == "three one four one five"
    assert tokenizer.decode(new) == "three one four one five </s>"


def test_stop_strings_work_with_the_tokenizer(loaded: Loaded) -> None:
    """transformers maps every vocabulary token to text for `stop_strings`; the tokenizer
    gives each a string (other text is spelled in characters, never one unknown token)."""
    tokenizer = loaded.tokenizer
    assert tokenizer.convert_ids_to_tokens(tokenizer("abc")["input_ids"])[:3] == ["a", "##b", "##c"]
    prompt = spell_prompt("1 2 9 4 5")
    if loaded.causal:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    enc = tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(
            **enc, max_new_tokens=20, do_sample=False, stop_strings=["nine"], tokenizer=tokenizer
        )
    new = out[0, enc["input_ids"].shape[1] :] if loaded.causal else out[0, 1:]
    assert tokenizer.decode(new, skip_special_tokens=True) == "one two nine"


def test_tokenizer_special_tokens_and_positions(loaded: Loaded) -> None:
    tokenizer = loaded.tokenizer
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.bos_token, tokenizer.unk_token) == (
        "<pad>",
        "</s>",
        "<s>",
        "<unk>",
    )
    assert tokenizer.convert_ids_to_tokens(tokenizer("Spell: 4 0 7")["input_ids"])[:5] == [
        "Spell",
        ":",
        "4",
        "0",
        "7",
    ]
    config = loaded.model.config
    if loaded.causal:
        assert tokenizer.padding_side == "left"
        assert config.max_position_embeddings == CAUSAL_MAX_POSITIONS == 64
    else:
        assert tokenizer.padding_side == "right"  # BART's positions are absolute
        assert config.max_position_embeddings == SEQ2SEQ_MAX_POSITIONS
        assert tokenizer("Spell: 4")["input_ids"][-1] == tokenizer.eos_token_id
        assert loaded.model.generation_config.decoder_start_token_id is not None


def test_chat_template_is_saved_and_holds_the_only_bos(demo_models: Path) -> None:
    model_dir = demo_models / CAUSAL
    saved = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert "{{ bos_token }}" in saved["chat_template"]
    tokenizer = load_pretrained(AutoTokenizer, model_dir)
    messages = [{"role": "user", "content": "Spell: 4 0 7"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<s><|user|> Spell: 4 0 7 <|end|> <|assistant|> "
    with_specials = tokenizer(text)["input_ids"]
    assert with_specials == tokenizer(text, add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(with_specials)
    assert tokens == ["<s>", "<|user|>", "Spell", ":", "4", "0", "7", "<|end|>", "<|assistant|>"]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    assert list(ids) == with_specials
    # no generation prompt: the turn ends without the assistant marker
    closed = tokenizer.apply_chat_template(messages, tokenize=False)
    assert not closed.rstrip().endswith("<|assistant|>")
    # the seq2seq model has no template: the handler feeds it the prompt itself
    assert not load_pretrained(AutoTokenizer, demo_models / SEQ2SEQ).chat_template


def test_a_build_that_misses_the_check_is_never_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two training steps cannot spell anything: the builder raises, nothing is cached."""
    monkeypatch.setitem(ops.demo_generation_models.STEPS, "seq2seq", 2)
    with pytest.raises(TrainingError, match="held-out"):
        build_all(tmp_path, names=[SEQ2SEQ])
    assert list(tmp_path.iterdir()) == []
