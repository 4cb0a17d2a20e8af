"""Token attributions: LayerIntegratedGradients on the input embedding layer, merged to words."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from captum.attr import LayerIntegratedGradients

from schemas.jobs import Explanation
from schemas.states import ExplanationStatus
from workers.explain.passes import rows_per_pass
from workers.explain.spans import baseline_ids

METHOD = "layer_integrated_gradients"


class Tokenised(Protocol):
    """What the explainer reads of one tokenised text (a handler's features)."""

    text: str
    input_ids: list[int]
    word_ids: list[int | None] | None
    offsets: list[tuple[int, int]] | None


@dataclass
class TokenModel:
    """The parts of a text model the explainer needs, handed over by the handler (so this
    module knows no handler): `pad` turns features into (input ids, attention mask) tensors
    on the model's device; `layer` is the input embedding layer attributions are taken at."""

    tokenizer: Any
    pad: Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor]]
    layer: torch.nn.Module


def explain_tokens(
    model: TokenModel,
    forward: Callable[..., torch.Tensor],
    batch: Sequence[Tokenised],
    targets: list[int],
    steps: int,
    internal_batch_size: int,
    target_names: list[str],
) -> list[Explanation]:
    """Explain a batch at once; if that fails, item by item, so one failure stays one failure.
    Captum's passes are sized by padded tokens (workers/explain/passes.py), never smaller than
    `internal_batch_size` rows."""
    try:
        return _attribute(model, forward, batch, targets, steps, internal_batch_size, target_names)
    except Exception:
        if len(batch) == 1:
            raise
    out = []
    for f, t, name in zip(batch, targets, target_names, strict=True):
        try:
            out += _attribute(model, forward, [f], [t], steps, internal_batch_size, [name])
        except Exception as exc:
            out.append(
                Explanation(
                    method=METHOD,
                    target=name,
                    status=ExplanationStatus.FAILED,
                    error=f"{type(exc).__name__}: {exc}"[:500],
                )
            )
    return out


def _attribute(
    model: TokenModel,
    forward: Callable[..., torch.Tensor],
    batch: Sequence[Tokenised],
    targets: list[int],
    steps: int,
    internal_batch_size: int,
    target_names: list[str],
) -> list[Explanation]:
    ids, mask = model.pad(list(batch))
    baseline = baseline_ids(model.tokenizer, ids)
    lig = LayerIntegratedGradients(forward, model.layer)
    attributions, delta = lig.attribute(
        inputs=ids,
        baselines=baseline,
        additional_forward_args=(mask,),
        target=targets,
        n_steps=steps,
        internal_batch_size=max(
            internal_batch_size, rows_per_pass(len(batch), ids.shape[1], steps)
        ),
        return_convergence_delta=True,
    )
    per_token = attributions.sum(dim=-1).detach().float().cpu().tolist()
    deltas = delta.detach().float().cpu().tolist()
    return [
        Explanation(
            method=METHOD,
            target=name,
            tokens=words,
            attributions=scores,
            convergence_delta=round(float(d), 6),
        )
        for f, row, d, name in zip(batch, per_token, deltas, target_names, strict=True)
        for words, scores in [_merge_word_pieces(model.tokenizer, f, row)]
    ]


def _merge_word_pieces(
    tokenizer: Any, f: Tokenised, scores: list[float]
) -> tuple[list[str], list[float]]:
    """Sum sub-word attributions into the words of the original text (fast tokenizers)."""
    words: list[str] = []
    merged: list[float] = []
    if f.word_ids is None or f.offsets is None:
        special = set(tokenizer.all_special_ids)
        for tok_id, s in zip(f.input_ids, scores, strict=False):
            if tok_id not in special:
                words.append(tokenizer.convert_ids_to_tokens(tok_id))
                merged.append(round(s, 6))
        return words, merged
    spans: dict[int, list[int]] = {}
    for pos, word in enumerate(f.word_ids):
        if word is not None:
            spans.setdefault(word, []).append(pos)
    for positions in spans.values():
        start, end = f.offsets[positions[0]][0], f.offsets[positions[-1]][1]
        words.append(f.text[start:end])
        merged.append(round(sum(scores[p] for p in positions), 6))
    return words, merged
