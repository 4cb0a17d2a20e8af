"""Token attributions: LayerIntegratedGradients on the input embedding layer, merged to words."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from captum.attr import LayerIntegratedGradients

from schemas.jobs import Explanation
from workers.explain.passes import rows_per_pass
from workers.explain.spans import WINDOWS_AT_ONCE, baseline_ids
from workers.explain.tensors import failed_explanation

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
    batch: Sequence[Sequence[Tokenised]],
    weights: Sequence[Sequence[float]],
    targets: list[int],
    steps: int,
    internal_batch_size: int,
    target_names: list[str],
) -> list[Explanation]:
    """Explain a batch of texts, each read in one window or several (`batch[i]`): the
    windows' word attributions added with `weights[i]` (what each window counts in the
    item's score: 1/W each under mean pooling, 1 for the deciding window under max), so a
    word's attribution comes from every window that holds it. At once; if that fails, item
    by item, so one failure stays one failure. Captum's passes are sized by padded tokens
    (workers/explain/passes.py), never smaller than `internal_batch_size` rows."""
    args = (model, forward, batch, weights, targets, steps, internal_batch_size, target_names)
    try:
        return _attribute(*args)
    except Exception:
        if len(batch) == 1:
            raise
    out = []
    for i, name in enumerate(target_names):
        try:
            out += _attribute(model, forward, [batch[i]], [weights[i]], [targets[i]], steps,
                              internal_batch_size, [name])  # fmt: skip
        except Exception as exc:
            out.append(failed_explanation(METHOD, exc, name))
    return out


def _attribute(
    model: TokenModel,
    forward: Callable[..., torch.Tensor],
    batch: Sequence[Sequence[Tokenised]],
    weights: Sequence[Sequence[float]],
    targets: list[int],
    steps: int,
    internal_batch_size: int,
    target_names: list[str],
) -> list[Explanation]:
    # the windows that count run; one of weight 0 (not the deciding one under max pooling)
    # only lists its words, at 0
    merged = [_Words() for _ in batch]
    pieces: list[tuple[int, float, Tokenised]] = []
    for n, (windows, item_weights) in enumerate(zip(batch, weights, strict=True)):
        for window, weight in zip(windows, item_weights, strict=True):
            if weight > 0:
                pieces.append((n, weight, window))
            else:
                merged[n].add(model.tokenizer, window, [0.0] * len(window.input_ids), 0.0, 0.0)
    scores: list[list[float]] = []
    deltas: list[float] = []
    for at in range(0, len(pieces), WINDOWS_AT_ONCE):
        part = pieces[at : at + WINDOWS_AT_ONCE]
        s, d = _token_scores(
            model, forward, [w for _, _, w in part], [targets[n] for n, _, _ in part], steps,
            internal_batch_size,
        )  # fmt: skip
        scores += s
        deltas += d
    for (n, weight, window), row, delta in zip(pieces, scores, deltas, strict=True):
        merged[n].add(model.tokenizer, window, row, weight, delta)
    return [
        Explanation(
            method=METHOD,
            target=name,
            tokens=words.texts(),
            attributions=words.scores(),
            convergence_delta=round(words.delta, 6),
        )
        for words, name in zip(merged, target_names, strict=True)
    ]


def _token_scores(
    model: TokenModel,
    forward: Callable[..., torch.Tensor],
    windows: Sequence[Tokenised],
    targets: list[int],
    steps: int,
    internal_batch_size: int,
) -> tuple[list[list[float]], list[float]]:
    """Per-token attributions of each window for its target, and the convergence deltas."""
    ids, mask = model.pad(list(windows))
    baseline = baseline_ids(model.tokenizer, ids)
    lig = LayerIntegratedGradients(forward, model.layer)
    attributions, delta = lig.attribute(
        inputs=ids,
        baselines=baseline,
        additional_forward_args=(mask,),
        target=targets,
        n_steps=steps,
        internal_batch_size=max(
            internal_batch_size, rows_per_pass(len(windows), ids.shape[1], steps)
        ),
        return_convergence_delta=True,
    )
    per_token = attributions.sum(dim=-1).detach().float().cpu().tolist()
    return per_token, [float(d) for d in delta.detach().float().cpu().tolist()]


class _Words:
    """One text's word attributions, added up over its windows: sub-word pieces summed into
    the words of the original text (fast tokenizers: by word id, which counts words of the
    whole text in every window); a slow tokenizer's tokens as they are."""

    def __init__(self) -> None:
        self.spans: dict[int, list[float]] = {}  # word id -> [start, end, attribution]
        self.tokens: list[tuple[str, float]] = []  # a slow tokenizer's (one window)
        self.delta = 0.0
        self.text = ""

    def add(
        self, tokenizer: Any, f: Tokenised, scores: list[float], weight: float, delta: float
    ) -> None:
        self.delta += weight * delta
        if f.word_ids is None or f.offsets is None:
            special = set(tokenizer.all_special_ids)
            self.tokens += [
                (tokenizer.convert_ids_to_tokens(tok_id), weight * s)
                for tok_id, s in zip(f.input_ids, scores, strict=False)
                if tok_id not in special
            ]
            return
        for pos, word in enumerate(f.word_ids):
            if word is None:
                continue
            start, end = f.offsets[pos]
            span = self.spans.setdefault(word, [start, end, 0.0])
            span[0], span[1] = min(span[0], start), max(span[1], end)
            span[2] += weight * scores[pos]
        self.text = f.text

    def texts(self) -> list[str]:
        if self.tokens:
            return [t for t, _ in self.tokens]
        return [self.text[int(a) : int(b)] for a, b, _ in self._ordered()]

    def scores(self) -> list[float]:
        if self.tokens:
            return [round(s, 6) for _, s in self.tokens]
        return [round(s, 6) for _, _, s in self._ordered()]

    def _ordered(self) -> list[list[float]]:
        return [self.spans[w] for w in sorted(self.spans)]
