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

Why not Captum's LLMAttribution itself: in Captum 0.9 it handles decoder-only models only (it
concatenates prompt and target into one input; an encoder-decoder needs decoder inputs), and
it runs one prompt and one ablation per forward pass. This module does the same computation
(FeatureAblation's "initial minus ablated" over token-presence features, the `log_prob`
target) for both kinds, every ablation of every item of a batch in shared forward passes.
With the padding baseline its per-output-token attributions equal LLMAttribution's
(forward_in_tokens=False) within 0.01 nats on the causal demo model (the unit tests check).

Measured by bench/generation.py on 2 CPU cores (one torch thread), the demo models, prompts
of 1-12 digits, greedy; tiny models, so fixed costs weigh more than with a real one:
  in the handler, 64 prompts generated in one batch then explained 8 at a time (as the
  actor does): generation + explanations took 6.1x generation alone (seq2seq), 5.3x (causal);
  end to end, 300 prompts: a job with explain="all" took 3.9x (seq2seq) and 4.1x (causal)
  the time of the same job without;
  Captum's LLMAttribution (padding baseline, forward_in_tokens=False) on 32 of the causal
  model's outputs took 4.7x this explainer's time.
An explanation costs (prompt tokens + 1) teacher-forced passes over prompt and output,
against one prompt pass and one step per output token for the generation, so it grows with
the prompt: past MAX_FEATURES tokens, adjacent tokens are ablated together, as spans."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from schemas.jobs import Explanation
from schemas.states import FinishReason
from workers.explain.tensors import each_or_batch, short

METHOD = "feature_ablation"
MAX_FEATURES = 128  # beyond this, adjacent prompt tokens are ablated together as spans
MAX_DETAIL_CELLS = 4096  # per_output_token kept in detail up to (output tokens x features)
LOGIT_BUDGET = 2**26  # logits per forward pass (rows x positions x vocabulary): 256 MB fp32
MAX_ROWS = 256  # rows per forward pass
SENTINEL = "SLUICEPROMPTSENTINEL"  # rendered through the chat template to find the prompt
END = "<end>"
MASK, PAD = "mask", "pad"  # how a token is ablated


class GenerationModel(Protocol):
    """What the explainer reads of the generate handler (so this module knows no handler)."""

    tokenizer: Any
    model: Any
    device: torch.device
    encoder_decoder: bool
    pad_id: int
    eos: Any  # a token id, a list of them, or None

    def encode(self, prompt: str) -> tuple[str, list[int]]: ...


class PromptFeatures(Protocol):
    text: str
    ids: list[int]
    decoding: Any


@dataclass(frozen=True)
class Row:
    """One teacher-forced scoring: prompt ids (`hidden` positions masked from attention),
    the target ids, and whether the end of sequence follows them."""

    ids: list[int]
    hidden: tuple[int, ...]
    target: list[int]
    ends: bool


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
    rows: list[Row] = []
    for p, a in zip(batch, items, strict=True):
        if not (a.target or a.ends) or not a.features:
            continue
        rows.append(Row(p.ids, (), a.target, a.ends))
        for positions in a.features:
            if ablation == MASK:
                rows.append(Row(p.ids, tuple(positions), a.target, a.ends))
            else:
                ids = [handler.pad_id if n in positions else i for n, i in enumerate(p.ids)]
                rows.append(Row(ids, (), a.target, a.ends))
    scores = iter(score(handler, rows))
    out = []
    for p, o, a in zip(batch, outputs, items, strict=True):
        text = str(o.get("text", ""))
        if not (a.target or a.ends):
            why = "nothing was generated: there is no sequence to attribute"
            out.append(Explanation(method=METHOD, target=text, detail={**a.notes, "empty": why}))
            continue
        if not a.features:
            why = "the prompt has no tokens of its own to ablate"
            out.append(Explanation(method=METHOD, target=text, detail={**a.notes, "empty": why}))
            continue
        original = next(scores)
        ablated = torch.stack([next(scores) for _ in a.features])  # (features, output tokens)
        per_token = (original[None, :] - ablated).T  # (output tokens, features)
        out.append(explanation(handler, p, a, text, original, per_token, ablation))
    return out


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
    if per_token.numel() <= MAX_DETAIL_CELLS:
        detail["per_output_token"] = [[short(float(v)) for v in row] for row in per_token]
    else:
        detail["per_output_token"] = None
        detail["per_output_token_left_out"] = (
            f"{per_token.shape[0]} output tokens x {per_token.shape[1]} prompt features is "
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


# -- scoring ---------------------------------------------------------------------------------


def end_ids(handler: GenerationModel) -> list[int]:
    eos = handler.eos
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if not ids and handler.tokenizer.eos_token_id is not None:
        ids = [handler.tokenizer.eos_token_id]
    return ids


def score(handler: GenerationModel, rows: list[Row]) -> list[Any]:
    """Per row: the log-probability of each target token under teacher forcing, and of the
    end (over every end-of-sequence id) where the row ends."""
    if not rows:
        return []
    ends = end_ids(handler)
    if any(r.ends for r in rows) and not ends:
        raise ValueError("the model has no end-of-sequence token to score its end by")
    head = handler.model.get_output_embeddings()
    vocab = int(head.weight.shape[0] if head is not None else handler.model.config.vocab_size)
    out: list[Any] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].ids) + len(rows[i].target))
    chunk: list[int] = []
    for i in order:
        width = len(rows[i].ids) + len(rows[i].target) + 1
        if chunk and ((len(chunk) + 1) * width * vocab > LOGIT_BUDGET or len(chunk) >= MAX_ROWS):
            score_chunk(handler, [rows[j] for j in chunk], ends, out, chunk)
            chunk = []
        chunk.append(i)
    score_chunk(handler, [rows[j] for j in chunk], ends, out, chunk)
    return out


def padded(
    seqs: list[list[int]], pad: int, device: torch.device, hidden: Sequence[tuple[int, ...]] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask (0 also at each row's `hidden` positions)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for n, s in enumerate(seqs):
        ids[n, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[n, : len(s)] = 1
        if hidden and hidden[n]:
            mask[n, list(hidden[n])] = 0
    return ids.to(device), mask.to(device)


def score_chunk(
    handler: GenerationModel, rows: list[Row], ends: list[int], out: list[Any], where: list[int]
) -> None:
    """Right-padded: every row's positions count from 0, as when it is scored alone."""
    model, pad, device = handler.model, handler.pad_id, handler.device
    hidden = [r.hidden for r in rows]
    if handler.encoder_decoder:
        start = model.generation_config.decoder_start_token_id
        if start is None:
            start = model.config.decoder_start_token_id
        if start is None:
            raise ValueError("the model has no decoder start token to score its output from")
        ids, mask = padded([r.ids for r in rows], pad, device, hidden)
        dec, dec_mask = padded([[int(start), *r.target] for r in rows], pad, device)
        first = [0] * len(rows)  # the decoder position that predicts the first target token
        with torch.inference_mode():
            logits = model(
                input_ids=ids, attention_mask=mask, decoder_input_ids=dec,
                decoder_attention_mask=dec_mask, use_cache=False,
            ).logits  # fmt: skip
    else:
        ids, mask = padded([r.ids + r.target for r in rows], pad, device, hidden)
        first = [len(r.ids) - 1 for r in rows]
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    for n, (row, f) in enumerate(zip(rows, first, strict=True)):
        steps = torch.log_softmax(logits[n, f : f + len(row.target) + 1].float(), dim=-1)
        at = torch.arange(len(row.target), device=steps.device)
        picked = steps[at, torch.tensor(row.target, dtype=torch.long, device=steps.device)]
        if row.ends:
            end = torch.logsumexp(
                steps[len(row.target), torch.tensor(ends, device=steps.device)], 0
            )
            picked = torch.cat([picked, end[None]])
        if not bool(torch.isfinite(picked).all()):
            raise ValueError("the model gave a non-finite log-probability for the output")
        out[where[n]] = picked.cpu()
