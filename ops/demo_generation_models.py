"""The two text generators of the demo (`generate` task): a tiny BART (sequence-to-sequence)
and a tiny Llama with a chat template (decoder-only), trained here on one synthetic task,
spelling digits as words ("Spell: 4 0 7" -> "four zero seven"; no downloads).

Each builder trains, saves (safetensors, no `auto_map`), reloads the saved directory the way
the handlers do (safetensors only, no custom code) and checks it: greedy generation must spell
every one of 200 fresh digit strings exactly, one prompt at a time, a padded batch of them
must give the same outputs, and every run of one digit ("6 6 6 6 6") must come out right. A
model that misses any of these is never written to the cache: the builder raises
TrainingError.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ops.demo_models import Metrics, isolated, seed_all
from schemas.errors import TrainingError
from workers.safe_loading import load_pretrained
from workers.training.scratch_generators import (
    MAX_DIGITS,
    TRAIN_MAX_DIGITS,
    generate_spellings,
    make_spell_tokenizer,
    random_digit_texts,
    repeated_digit_texts,
    save_spell_tokenizer,
    spell_digits,
    tiny_bart,
    tiny_llama,
    train_spell_model,
)
from workers.training.scratch_models import patch_config_json

HELDOUT = 200
# the training strings come from `seed`; the held-out ones from a stream no seed reaches
HELDOUT_SEED_OFFSET = 1_000_003
TRAINED_ON = "synthetic: digit strings spelled as words ('Spell: 4 0 7' -> 'four zero seven')"
STEPS = {"seq2seq": 500, "causal": 800}


def _check(model_dir: Path, *, causal: bool, seed: int) -> Metrics:
    """Exact-match accuracy of the saved model, unbatched, and whether a batch agrees."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer, model_dir)
    auto = AutoModelForCausalLM if causal else AutoModelForSeq2SeqLM
    model = load_pretrained(auto, model_dir).eval()
    texts = random_digit_texts(HELDOUT, seed + HELDOUT_SEED_OFFSET)
    single = [generate_spellings(model, tokenizer, [t], causal=causal)[0] for t in texts]
    batched = generate_spellings(model, tokenizer, texts, causal=causal)
    runs = repeated_digit_texts()
    wrong = [
        (t, out)
        for t, out in [
            *zip(texts, single, strict=True),
            *zip(runs, generate_spellings(model, tokenizer, runs, causal=causal), strict=True),
        ]
        if out != spell_digits(t)
    ]
    if wrong or batched != single:
        raise TrainingError(
            f"the demo model built in {model_dir} spells {len(wrong)} of {len(texts)} held-out "
            f"digit strings and {len(runs)} runs of one digit wrong (first: {wrong[:3]}), and "
            f"its batched outputs {'match' if batched == single else 'differ from'} the "
            "unbatched ones; it is not saved. Its recipe (ops/demo_generation_models.py, "
            "workers/training/scratch_generators.py) needs more training steps or a fix."
        )
    return {
        "exact_match": 1.0,  # unbatched greedy generation, the `HELDOUT` fresh strings
        "runs_exact_match": 1.0,  # batched, every run of one digit up to MAX_DIGITS
        "batched_equals_unbatched": True,
        "n_heldout": len(texts),
        "n_runs": len(runs),
    }


def _build(out: Path, *, causal: bool, seed: int) -> Metrics:
    started = time.perf_counter()
    seed_all(seed)
    kind = "causal" if causal else "seq2seq"
    tokenizer = make_spell_tokenizer(causal=causal)
    model = tiny_llama(tokenizer) if causal else tiny_bart(tokenizer)
    losses = train_spell_model(model, tokenizer, causal=causal, seed=seed, steps=STEPS[kind])
    trained = time.perf_counter()
    model.save_pretrained(out, safe_serialization=True)
    save_spell_tokenizer(tokenizer, out)
    facts: dict[str, Any] = {
        "task": "generate",
        "trained_on": TRAINED_ON,
        "max_digits": MAX_DIGITS,
        "train_max_digits": TRAIN_MAX_DIGITS,
        "train_steps": STEPS[kind],
        "final_loss": losses[-1],
    }
    patch_config_json(out, sluice_demo=facts)
    metrics = _check(out, causal=causal, seed=seed)
    return {
        **metrics,
        "final_loss": losses[-1],
        "train_steps": STEPS[kind],
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": trained - started,
        "seconds": time.perf_counter() - started,
    }


@isolated
def build_spell_seq2seq(out: Path, *, seed: int = 0) -> Metrics:
    """`tiny-spell-seq2seq`: a BART whose encoder reads "Spell: 4 0 7" and whose decoder
    writes "four zero seven" (AutoModelForSeq2SeqLM; pad the encoder input on the right)."""
    return _build(out, causal=False, seed=seed)


@isolated
def build_spell_causal(out: Path, *, seed: int = 0) -> Metrics:
    """`tiny-spell-causal`: a Llama trained on its chat template's rendering of one user turn
    "Spell: 4 0 7" followed by "four zero seven" (AutoModelForCausalLM; pad on the left)."""
    return _build(out, causal=True, seed=seed)
