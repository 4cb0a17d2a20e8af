"""Generation attributions: how much the generated text depends on each token of the prompt.
Each prompt token in turn is hidden from attention (feature ablation) and the generated
sequence is scored again under teacher forcing; the drop in its log-probability is the
token's attribution (positive: the token made this output likelier). The target is the
output's text re-tokenised as the model writes it, followed by the end of sequence where the
model ended it (finish reason `stop`): the probability of exactly this output.
`detail["per_output_token"]` holds each generated token's own drop, per prompt token.

Only the prompt's own tokens are attributed: a chat template's scaffolding (role markers,
BOS) and special tokens stay in place, unablated and unlisted. Ablation has no convergence
delta (each token's effect is measured alone; what tokens do together is not apportioned),
so `convergence_delta` is None.

Why ablation, not LayerIntegratedGradients (the text classifiers' method): its target is one
logit; a generation is a sequence whose every token conditions the next, and a gradient path
from an all-padding prompt runs through prompts the model never saw. Ablation answers the
question a reader asks ("without this token, would the model still have written this?").

Why hidden from attention, not replaced by the padding token (Captum's TextTokenInput
baseline): a padding token's embedding is usually untrained (padding is masked in training),
so a token replaced by it becomes noise that may read like another token. Measured on the demo
models, 200 prompts of distinct digits: replaced by padding, some digits barely moved their
own word (by 0.11 nats on the seq2seq model, 0.005 on the causal one), and on the causal
model 97 of 1110 words were not moved most by their own digit; hidden, every digit moved its
word by at least 2.0 nats (7.8 causal), and 1110 and 1109 of 1110 words were moved most by
their own digit. explain_generations(..., ablation=PAD) gives the padding-baseline figures.

Captum's FeatureAblation runs the ablations. Its input is the prompts' attention masks
(float; baseline 0, hidden), one row per item and output token so that its attributions are
per output token; its feature mask groups each prompt's own tokens (one feature each, or one
per span), the scaffolding and padding in a group whose baseline is its own value; its forward
function scores each row under teacher forcing, each item's mask once per ablation, in shared
passes (perturbations_per_eval: all of a batch's ablations at once where they fit). Not
Captum's LLMAttribution: in Captum 0.9 it handles decoder-only models only (an
encoder-decoder needs decoder inputs) and runs one prompt and one ablation per pass. With the
padding baseline the per-output-token attributions equal LLMAttribution's
(forward_in_tokens=False) within 0.01 nats on the causal demo model (the unit tests check).

Measured by bench/generation.py on 2 CPU cores (one torch thread), the demo models, prompts
of 1-12 digits, greedy; tiny models, so fixed costs weigh more than with a real one: in the
handler, 64 prompts generated in one batch then explained 8 at a time (as the actor does),
generation + explanations took 7.0x generation alone (seq2seq), 6.8x (causal), against 6.2x
and 6.1x when this module ran the ablations itself (not profiled; a separate pass for the
unablated scores and Captum's bookkeeping are the likely cost); Captum's LLMAttribution on
32 of the causal model's outputs took 3.6x this explainer's time. End to end (300 prompts,
measured before the switch to Captum), a job with explain="all" took 3.9x (seq2seq) and 4.1x
(causal) the time of the same job without.
An explanation costs (prompt tokens + 1) teacher-forced passes over prompt and output,
against one prompt pass and one step per output token for the generation, so it grows with
the prompt: past MAX_FEATURES tokens, adjacent tokens are ablated together, as spans."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from captum.attr import FeatureAblation

from schemas.generation_params import END_OF_OUTPUT
from schemas.jobs import Explanation
from schemas.states import FinishReason
from workers.explain.teacher_forcing import GenerationModel, Row, score
from workers.explain.tensors import each_or_batch, short

METHOD = "feature_ablation"
MAX_FEATURES = 128  # beyond this, adjacent prompt tokens are ablated together as spans
MAX_DETAIL_CELLS = 4096  # per_output_token kept in detail up to (output tokens x features)
ABLATION_CELLS = 2**22  # mask values per Captum evaluation (perturbations x rows x width)
SENTINEL = "SLUICEPROMPTSENTINEL"  # rendered through the chat template to find the prompt
END = END_OF_OUTPUT
MASK, PAD = "mask", "pad"  # how a token is ablated


class PromptFeatures(Protocol):
    text: str
    ids: list[int]
    decoding: Any


@dataclass
class Attributable:
    """One item's prompt split into ablation features and its target."""

    features: list[list[int]]  # positions in the prompt's ids, per feature
    tokens: list[str]  # each feature as text
    target: list[int]  # the generated tokens, re-tokenised
    ends: bool  # the model ended the sequence (its end is scored too)
    notes: dict[str, Any]


def explain_generations(
    handler: GenerationModel,
    batch: Sequence[PromptFeatures],
    outputs: Sequence[dict[str, Any]],
    ablation: str = MASK,
) -> list[Explanation]:
    """One explanation per (prompt, output): all of a batch's ablations scored together;
    if that fails, item by item, so one failure stays one item's. `ablation`: MASK (the
    token hidden from attention) or PAD (replaced by the padding token, as Captum's
    LLMAttribution does with a padding baseline)."""
    if ablation not in (MASK, PAD):
        raise ValueError(f"ablation is {MASK!r} or {PAD!r}, not {ablation!r}")
    texts: list[str | None] = [str(o.get("text", "")) for o in outputs]

    def explain(idx: list[int]) -> list[Explanation]:
        items = [batch[i] for i in idx]
        return attribute(handler, items, [outputs[i] for i in idx], ablation)

    return each_or_batch(len(batch), METHOD, texts, explain)


def attribute(
    handler: GenerationModel,
    batch: Sequence[PromptFeatures],
    outputs: Sequence[dict[str, Any]],
    ablation: str,
) -> list[Explanation]:
    span = content_span(handler)
    items = [attributable(handler, p, o, span) for p, o in zip(batch, outputs, strict=True)]
    live = [n for n, a in enumerate(items) if (a.target or a.ends) and a.features]
    ablated = ablate(handler, [batch[n] for n in live], [items[n] for n in live], ablation)
    found = dict(zip(live, ablated, strict=True))
    out = []
    for n, (p, o, a) in enumerate(zip(batch, outputs, items, strict=True)):
        text = str(o.get("text", ""))
        if not (a.target or a.ends):
            why = "nothing was generated: there is no sequence to attribute"
            out.append(Explanation(method=METHOD, target=text, detail={**a.notes, "empty": why}))
            continue
        if not a.features:
            why = "the prompt has no tokens of its own to ablate"
            out.append(Explanation(method=METHOD, target=text, detail={**a.notes, "empty": why}))
            continue
        original, per_token = found[n]
        out.append(explanation(handler, p, a, text, original, per_token, ablation))
    return out


def ablate(
    handler: GenerationModel,
    prompts: Sequence[PromptFeatures],
    items: Sequence[Attributable],
    ablation: str,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per item: its output tokens' log-probabilities and Captum's FeatureAblation
    attributions, (output tokens, features), or (1, features) for the whole output where no
    item keeps the per-output-token detail. Captum's input is the prompts' attention masks
    (float, right-padded), one row per item and output token, so that its attributions are
    per output token; `feature_mask` groups each item's own tokens into its features (ids
    0..k-1, the same id in every item: one forward pass ablates feature k of every item) and
    puts the scaffolding and padding in one group KEPT whose baseline is its own value."""
    if not items:
        return []
    pairs = list(zip(prompts, items, strict=True))
    original = score(handler, [Row(p.ids, (), a.target, a.ends) for p, a in pairs])
    detailed = any(
        len(o) * len(a.features) <= MAX_DETAIL_CELLS for o, a in zip(original, items, strict=True)
    )
    steps = max(len(o) for o in original) if detailed else 1
    width = max(len(p.ids) for p in prompts)
    kept = max(len(a.features) for a in items)  # the group that is never ablated
    present = torch.zeros((len(items), width))
    groups = torch.full((len(items), width), kept, dtype=torch.long)
    for n, (p, a) in enumerate(pairs):
        present[n, : len(p.ids)] = 1
        for f, positions in enumerate(a.features):
            groups[n, positions] = f
    baseline = present * (groups == kept)  # 0, hidden, at the prompt's own tokens
    forward = scorer(handler, prompts, items, present, original, steps, ablation)
    per_eval = max(1, min(kept + 1, ABLATION_CELLS // (len(items) * steps * width)))
    attributions = FeatureAblation(forward).attribute(
        present.repeat_interleave(steps, 0),
        baselines=baseline.repeat_interleave(steps, 0),
        feature_mask=groups.repeat_interleave(steps, 0),
        perturbations_per_eval=per_eval,
    )  # (items x steps, width): each position gets its feature's attribution
    out = []
    for n, (o, a) in enumerate(zip(original, items, strict=True)):
        rows = attributions[n * steps : n * steps + (len(o) if detailed else 1)]
        out.append((o, rows[:, [positions[0] for positions in a.features]]))
    return out


def scorer(
    handler: GenerationModel,
    prompts: Sequence[PromptFeatures],
    items: Sequence[Attributable],
    present: torch.Tensor,
    original: list[torch.Tensor],
    steps: int,
    ablation: str,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Captum's forward function: per row of (perturbed) masks, the log-probability of its
    item's output token under teacher forcing (0 past the item's output; the output's total
    where `steps` is 1). Rows of one item are alike: each item's mask is scored once per
    perturbation, an unchanged one not at all (its scores are `original`)."""

    def forward(masks: torch.Tensor) -> torch.Tensor:
        rows = masks[::steps]  # (perturbations x items, width)
        out = torch.zeros((rows.shape[0], steps))
        todo: list[Row] = []
        where: list[int] = []
        for r in range(rows.shape[0]):
            n = r % len(items)
            p, a = prompts[n], items[n]
            hidden = [int(i) for i in (present[n] > rows[r]).nonzero().flatten()]
            if not hidden:
                put(out, r, original[n], steps)
            elif ablation == MASK:
                todo.append(Row(p.ids, tuple(hidden), a.target, a.ends))
                where.append(r)
            else:
                ids = list(p.ids)
                for i in hidden:
                    ids[i] = handler.pad_id
                todo.append(Row(ids, (), a.target, a.ends))
                where.append(r)
        for r, s in zip(where, score(handler, todo), strict=True):
            put(out, r, s, steps)
        return out.flatten()  # row (perturbation x item) x steps + output token

    return forward


def put(out: torch.Tensor, row: int, scores: torch.Tensor, steps: int) -> None:
    if steps == 1:
        out[row, 0] = scores.sum()
    else:
        out[row, : len(scores)] = scores


def explanation(
    handler: GenerationModel,
    prompt: PromptFeatures,
    a: Attributable,
    text: str,
    original: torch.Tensor,
    per_token: torch.Tensor,
    ablation: str,
) -> Explanation:
    names = [str(handler.tokenizer.decode([i])) for i in a.target]
    detail: dict[str, Any] = {
        **a.notes,
        "target_log_prob": short(float(original.sum())),
        "target_tokens": [*names, END] if a.ends else names,
        "target_token_log_probs": [short(float(v)) for v in original],
        "baseline": "each prompt token hidden from attention, in turn"
        if ablation == MASK
        else f"each prompt token replaced by the padding token "
        f"{handler.tokenizer.convert_ids_to_tokens(handler.pad_id)!r}, in turn",
        "convergence_delta": "none: ablation measures each token's effect alone; "
        "effects of tokens together are not apportioned",
    }
    if len(original) * per_token.shape[1] <= MAX_DETAIL_CELLS:
        detail["per_output_token"] = [[short(float(v)) for v in row] for row in per_token]
    else:
        detail["per_output_token"] = None
        detail["per_output_token_left_out"] = (
            f"{len(original)} output tokens x {per_token.shape[1]} prompt features is "
            f"over {MAX_DETAIL_CELLS} values"
        )
    if getattr(prompt.decoding, "samples", False):
        detail["scored_at"] = "temperature 1, no top_p: the model's own distribution"
    return Explanation(
        method=METHOD,
        target=text,
        tokens=a.tokens,
        attributions=[short(float(v)) for v in per_token.sum(0)],
        convergence_delta=None,
        detail=detail,
    )


# -- what is attributed ----------------------------------------------------------------------


def content_span(handler: GenerationModel) -> tuple[str, str]:
    """The text a chat template puts before and after the prompt ("" and "" without one)."""
    templated, _ = handler.encode(SENTINEL)
    before, found, after = templated.partition(SENTINEL)
    return (before, after) if found else ("", "")


def attributable(
    handler: GenerationModel,
    prompt: PromptFeatures,
    output: dict[str, Any],
    span: tuple[str, str],
) -> Attributable:
    tok = handler.tokenizer
    text = str(output.get("text", ""))
    target = list(tok(text, add_special_tokens=False)["input_ids"]) if text else []
    ends = output.get("finish_reason") == FinishReason.STOP.value
    notes: dict[str, Any] = {}
    positions, pieces = prompt_tokens(handler, prompt, span, notes)
    size = max(1, -(-len(positions) // MAX_FEATURES))  # adjacent tokens together past the cap
    features = [positions[s : s + size] for s in range(0, len(positions), size)]
    tokens = [joined(prompt.text, pieces[s : s + size]) for s in range(0, len(pieces), size)]
    if size > 1:
        notes["spans"] = f"{len(positions)} prompt tokens, ablated {size} adjacent at a time"
    return Attributable(features, tokens, target, ends, notes)


def joined(text: str, pieces: list[tuple[int, int] | str]) -> str:
    """Adjacent tokens as one piece of text: the prompt from the first's start to the last's
    end where there are offsets."""
    first, last = pieces[0], pieces[-1]
    if isinstance(first, tuple) and isinstance(last, tuple):
        return text[first[0] : last[1]]
    return "".join(p if isinstance(p, str) else text[p[0] : p[1]] for p in pieces)


def prompt_tokens(
    handler: GenerationModel,
    prompt: PromptFeatures,
    span: tuple[str, str],
    notes: dict[str, Any],
) -> tuple[list[int], list[tuple[int, int] | str]]:
    """Positions in the prompt's ids that are the prompt's own text, and per token its
    character span in prompt.text (its token string if the tokenizer gives no offsets); the
    chat template's scaffolding and special tokens are left out."""
    tok = handler.tokenizer
    special = set(tok.all_special_ids)
    before, after = span
    text = prompt.text
    if text.startswith(before) and text.endswith(after) and len(before) + len(after) <= len(text):
        start, end = len(before), len(text) - len(after)
    else:
        start, end = 0, len(text)
    offsets = token_offsets(tok, text, prompt.ids)
    positions: list[int] = []
    pieces: list[tuple[int, int] | str] = []
    if offsets is None:  # a slow tokenizer: no character offsets
        notes["scaffolding"] = "special tokens left out; template text, if any, is attributed"
        positions = [n for n, i in enumerate(prompt.ids) if i not in special]
        return positions, [str(tok.convert_ids_to_tokens(prompt.ids[n])) for n in positions]
    for n, (s, e) in enumerate(offsets):
        if e > s and e > start and s < end and prompt.ids[n] not in special:
            positions.append(n)
            pieces.append((max(s, start), min(e, end)))
    left = len(prompt.ids) - len(positions)
    if left:
        notes["scaffolding"] = f"{left} template or special tokens kept, not attributed"
    return positions, pieces


def token_offsets(tok: Any, text: str, ids: list[int]) -> list[tuple[int, int]] | None:
    """Character offsets of `ids` in `text`, from the tokenizer call that made them."""
    for special in (False, True):
        try:
            enc = tok(text, add_special_tokens=special, return_offsets_mapping=True)
        except (NotImplementedError, ValueError, TypeError):
            return None
        if list(enc["input_ids"]) == list(ids):
            return [(int(s), int(e)) for s, e in enc["offset_mapping"]]
    return None
