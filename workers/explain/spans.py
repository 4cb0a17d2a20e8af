"""Attributions for span tasks (`answer-question`, `extract-entities`): LayerIntegratedGradients
on the input word embeddings of one model window, for a scalar read from the window's output
(a span's start + end logits; an entity type's probability summed over the entity's tokens),
merged from word pieces to the words of the text, with their character offsets so a report
can colour the text itself.

Why these targets: an extractive reader picks its span by start and end logits, so their sum
is what the choice is made of (logits, not probabilities: a softmax over the window would let
every other token's logit move the target). A tagger decides token by token, so an entity is
explained by its type's probability (B- and I- together: the type, not where the entity
starts) over its own tokens. The baseline keeps the special tokens and pads every other one,
as the text explainer does (workers/explain/text.py)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import LayerIntegratedGradients

from schemas.jobs import Explanation
from schemas.states import ExplanationStatus
from workers.explain.passes import rows_per_pass

WINDOWS_AT_ONCE = 32  # windows one attribution call runs together (each pass: all of them)

METHOD = "layer_integrated_gradients"

# What the model's output is read as: (model output, *per-row target tensors) -> one scalar
# per row.
Readout = Callable[..., torch.Tensor]


@dataclass
class TokenWindow:
    """One model input: a window of a text (or of a question and its context)."""

    input_ids: list[int]
    offsets: list[tuple[int, int]]  # characters of the text its sequence id names
    word_ids: list[int | None]
    sequence_ids: list[int | None]  # None for special tokens; 0 the first text, 1 the second
    token_type_ids: list[int] | None = None

    @property
    def special(self) -> list[bool]:
        return [s is None for s in self.sequence_ids]


@dataclass(frozen=True)
class Word:
    part: int  # the sequence id: 0 the question (or the only text), 1 the context
    text: str
    start: int
    end: int
    attribution: float


def pad_windows(tokenizer: Any, windows: Sequence[TokenWindow]) -> dict[str, torch.Tensor]:
    """The windows as one padded model input (input_ids, attention_mask, token_type_ids
    where the tokenizer feeds them)."""
    features: dict[str, list[list[int]]] = {"input_ids": [w.input_ids for w in windows]}
    if "token_type_ids" in tokenizer.model_input_names and windows[0].token_type_ids is not None:
        features["token_type_ids"] = [w.token_type_ids or [] for w in windows]
    padded = tokenizer.pad(features, return_tensors="pt")
    return {k: v for k, v in padded.items() if k in tokenizer.model_input_names}


def attribute_windows(
    model: torch.nn.Module,
    tokenizer: Any,
    windows: Sequence[TokenWindow],
    readout: Readout,
    targets: Sequence[torch.Tensor],
    steps: int,
    internal_batch_size: int,
) -> tuple[list[list[float]], list[float]]:
    """Per-token attributions of each window (its own length) for `readout` of the model's
    output, and the convergence deltas. `targets` are tensors with one row per window.
    Windows are attributed WINDOWS_AT_ONCE at a time: Captum runs every window of a call in
    each pass, so a row of many entities must not make one pass of hundreds of windows."""
    scores: list[list[float]] = []
    deltas: list[float] = []
    for at in range(0, len(windows), WINDOWS_AT_ONCE):
        part = slice(at, at + WINDOWS_AT_ONCE)
        s, d = _attribute(
            model, tokenizer, windows[part], readout, [t[part] for t in targets], steps,
            internal_batch_size,
        )  # fmt: skip
        scores += s
        deltas += d
    return scores, deltas


def _attribute(
    model: torch.nn.Module,
    tokenizer: Any,
    windows: Sequence[TokenWindow],
    readout: Readout,
    targets: Sequence[torch.Tensor],
    steps: int,
    internal_batch_size: int,
) -> tuple[list[list[float]], list[float]]:
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in pad_windows(tokenizer, windows).items()}
    ids = inputs.pop("input_ids")
    names = list(inputs)  # attention_mask, token_type_ids: passed on, batch-expanded by Captum

    def forward(input_ids: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        extra = dict(zip(names, args[: len(names)], strict=True))
        return readout(model(input_ids=input_ids, **extra), *args[len(names) :])

    layer = model.get_input_embeddings()  # type: ignore[operator]
    assert isinstance(layer, torch.nn.Module)
    lig = LayerIntegratedGradients(forward, layer)
    attributions, delta = lig.attribute(
        inputs=ids,
        baselines=baseline_ids(tokenizer, ids),
        additional_forward_args=(*inputs.values(), *(t.to(device) for t in targets)),
        n_steps=steps,
        internal_batch_size=max(
            internal_batch_size, rows_per_pass(len(windows), ids.shape[1], steps)
        ),
        return_convergence_delta=True,
    )
    per_token = attributions.sum(dim=-1).detach().float().cpu().tolist()
    scores = [row[: len(w.input_ids)] for row, w in zip(per_token, windows, strict=True)]
    return scores, [round(float(d), 6) for d in delta.detach().cpu()]


def baseline_ids(tokenizer: Any, ids: torch.Tensor) -> torch.Tensor:
    """The reference input: special tokens (padding included) kept, every other token padded."""
    special = torch.tensor(
        [
            tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True)
            for row in ids.tolist()
        ],
        dtype=torch.bool,
        device=ids.device,
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return torch.where(special, ids, torch.full_like(ids, pad_id))


def words(window: TokenWindow, texts: Sequence[str], scores: Sequence[float]) -> list[Word]:
    """The window's words (pieces of one word summed), in order; `texts[part]` is the text a
    sequence id's offsets count characters of."""
    spans: dict[tuple[int, int], list[int]] = {}
    for pos, (part, word) in enumerate(zip(window.sequence_ids, window.word_ids, strict=True)):
        if part is not None and word is not None:
            spans.setdefault((part, word), []).append(pos)
    out = []
    for (part, _), positions in spans.items():
        start, end = window.offsets[positions[0]][0], window.offsets[positions[-1]][1]
        total = sum(scores[p] for p in positions)
        out.append(Word(part, texts[part][start:end], start, end, round(total, 6)))
    return out


def failed(error: BaseException, target: str | None = None) -> Explanation:
    return Explanation(
        method=METHOD,
        target=target,
        status=ExplanationStatus.FAILED,
        error=f"{type(error).__name__}: {error}"[:500],
    )


def batch_or_each(run: Callable[[list[int]], list[Explanation]], size: int) -> list[Explanation]:
    """`run` on positions 0..size-1 at once; if that fails, one position at a time, so one
    item's failure is that item's failed explanation and no other's."""
    try:
        return run(list(range(size)))
    except Exception as exc:
        if size == 1:
            return [failed(exc)]
    out = []
    for i in range(size):
        try:
            out += run([i])
        except Exception as exc:
            out.append(failed(exc))
    return out
