"""(input, target) text pairs as the arrays the generate recipe trains on.

The model reads each input as the `generate` handler gives it (workers/handlers/generate.py,
with the job's default prompt "{text}"): inside the tokenizer's chat template where it has
one (one user turn, then the assistant's turn begins), else tokenized with the tokenizer's
own special tokens. The target is followed by the end-of-sequence token, so the model learns
where its output ends. A decoder-only model reads prompt + target (labels on the target
only); an encoder-decoder reads the prompt and writes the target.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas.training import TrainSpec
from workers.handlers.generate import encode_prompt

IGNORE = -100  # label of a position the loss skips (prompt, padding)
MAX_TOKENS = 1024  # per sequence, for a model whose positions have no limit


@dataclass(frozen=True)
class Tokens:
    """The ids the arrays are made with."""

    eos: int
    pad: int
    start: int  # the decoder's first input (encoder-decoders)


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """The input's token ids as the generate handler encodes it."""
    return encode_prompt(tokenizer, text)[1]


def pairs_of(rows: list[dict[str, Any]], spec: TrainSpec) -> list[tuple[str, str]]:
    """(input, target) per row; rows with no input or target text are named (checked at
    submit too: the data may have changed since)."""
    columns = (spec.text_column, spec.label_column)
    bad = [
        f"row {n}"
        for n, row in enumerate(rows, 1)
        if not all(isinstance(row.get(c), str) and row[c].strip() for c in columns)
    ]
    if bad:
        raise ValueError(
            f"rows with no input text in {spec.text_column!r} or no target text in "
            f"{spec.label_column!r}: {'; '.join(bad[:5])}"
        )
    return [(row[spec.text_column], row[spec.label_column]) for row in rows]


def token_id(*candidates: Any) -> int | None:
    """The first candidate that is an id (a list, such as several end tokens: its first)."""
    for value in candidates:
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, int):
            return value
    return None


def tokens_of(base: str, config: Any, tokenizer: Any, encoder_decoder: bool) -> Tokens:
    """End, padding and decoder-start ids as the base generates with them
    (generation_config.json first, as `generate` reads it)."""
    path = Path(base) / "generation_config.json"
    generation = json.loads(path.read_text()) if path.is_file() else {}
    eos = token_id(
        generation.get("eos_token_id"),
        getattr(config, "eos_token_id", None),
        tokenizer.eos_token_id,
    )
    if eos is None:
        raise ValueError(
            "the base model has no end-of-sequence token: a generator must learn where its "
            "output ends"
        )
    start = token_id(
        generation.get("decoder_start_token_id"),
        getattr(config, "decoder_start_token_id", None),
        getattr(config, "bos_token_id", None),
    )
    if encoder_decoder and start is None:
        raise ValueError("the base model has no decoder start token")
    pad = token_id(tokenizer.pad_token_id, eos)
    assert pad is not None
    return Tokens(eos=eos, pad=pad, start=start if start is not None else pad)


def encode(
    pairs: list[tuple[str, str]], tokenizer: Any, tokens: Tokens, limit: int, seq2seq: bool
) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt ids and target ids (ending with eos) per pair; rows over the model's positions
    are named (they would be cut, and trained on a target they do not hold)."""
    inputs, targets, too_long = [], [], []
    for n, (text, target) in enumerate(pairs, 1):
        source = prompt_ids(tokenizer, text)
        wanted = [*tokenizer(target, add_special_tokens=False)["input_ids"], tokens.eos]
        longest = max(len(source), len(wanted)) if seq2seq else len(source) + len(wanted)
        if longest > limit:
            too_long.append(f"row {n} ({longest} tokens)")
        inputs.append(source)
        targets.append(wanted)
    if too_long:
        what = "input or target" if seq2seq else "input and target together"
        raise ValueError(
            f"rows whose {what} are over the model's {limit} positions: "
            f"{'; '.join(too_long[:5])}; shorten or remove them"
        )
    return inputs, targets


def padded(seqs: list[list[int]], value: int, left: bool = False) -> np.ndarray:
    width = max(len(s) for s in seqs)
    out = np.full((len(seqs), width), value, dtype=np.int64)
    for i, s in enumerate(seqs):
        if left:
            out[i, width - len(s) :] = s
        else:
            out[i, : len(s)] = s
    return out


def arrays(
    inputs: list[list[int]], targets: list[list[int]], tokens: Tokens, seq2seq: bool
) -> dict[str, np.ndarray]:
    """Padded token ids, attention masks and labels (IGNORE off the target), plus what
    held-out generation needs: the prompt (left-padded for a decoder-only model, as the
    handler pads it) and the target ids."""
    target_ids = padded(targets, IGNORE)
    if seq2seq:
        return {
            "input_ids": padded(inputs, tokens.pad),
            "attention_mask": padded([[1] * len(s) for s in inputs], 0),
            "decoder_input_ids": padded([[tokens.start, *t[:-1]] for t in targets], tokens.pad),
            "labels": target_ids,
            "target_ids": target_ids,
        }
    seqs = [[*s, *t] for s, t in zip(inputs, targets, strict=True)]
    labels = [[IGNORE] * len(s) + t for s, t in zip(inputs, targets, strict=True)]
    return {
        "input_ids": padded(seqs, tokens.pad),
        "attention_mask": padded([[1] * len(s) for s in seqs], 0),
        "labels": padded(labels, IGNORE),
        "prompt_ids": padded(inputs, tokens.pad, left=True),
        "prompt_mask": padded([[1] * len(s) for s in inputs], 0, left=True),
        "target_ids": target_ids,
    }


def split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train row indices (sorted) and held-out ones (in a seeded random order, so any first
    part of them is a random sample): a shuffle, as targets are texts with nothing to
    stratify on; at least one row on each side."""
    held_n = min(n - 1, max(1, math.ceil(n * fraction)))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[held_n:]), order[:held_n]


def text_of(tokenizer: Any, ids: list[int], eos: int) -> str:
    """Generated or target ids up to the end-of-sequence token, as text."""
    ids = ids[: ids.index(eos)] if eos in ids else ids
    return str(tokenizer.decode(ids, skip_special_tokens=True)).strip()
