"""Teacher-forced scoring of generated outputs: per row (a prompt, some of its positions
hidden from attention, a target), the log-probability of each target token and of the end of
sequence, rows batched under a logit budget. What workers/explain/generation.py ablates by."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

LOGIT_BUDGET = 2**26  # logits per forward pass (rows x positions x vocabulary): 256 MB fp32
MAX_ROWS = 256  # rows per forward pass


class GenerationModel(Protocol):
    """What the explainer reads of the generate handler (so this module knows no handler)."""

    tokenizer: Any
    model: Any
    device: torch.device
    encoder_decoder: bool
    pad_id: int
    eos: Any  # a token id, a list of them, or None

    def encode(self, prompt: str) -> tuple[str, list[int]]: ...


@dataclass(frozen=True)
class Row:
    """One teacher-forced scoring: prompt ids (`hidden` positions masked from attention),
    the target ids, and whether the end of sequence follows them."""

    ids: list[int]
    hidden: tuple[int, ...]
    target: list[int]
    ends: bool


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
