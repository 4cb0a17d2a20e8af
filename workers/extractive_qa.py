"""Extractive question answering over long contexts: what transformers 4's
`pipeline("question-answering")` did (transformers 5 removed that pipeline).

A (question, context) pair is cut into overlapping windows of at most `max_seq_len` tokens
("[CLS] question [SEP] context part [SEP]"), consecutive windows sharing `doc_stride` context
tokens, so an answer near a window's edge is whole in the next one. In each window the start
and end logits are turned into probabilities over that window's context tokens and [CLS]
(SQuAD 2.0: a model points at [CLS], token 0, when the window holds no answer); a span's score
is p(start) * p(end), the null score p_[CLS](start) * p_[CLS](end). The answer is the best span
of any window, at most `max_answer_len` tokens long, as characters of the context, widened to
the whole words its first and last tokens belong to (v4's `align_to_words=True`, its default:
a reader pointing into "Tessaly" answers "Tessaly", not "Tes"; words are the tokenizer's
pre-tokenizer's, so a run of letters and digits without spaces is one word).

`null_score` is the smallest null score over the windows (as the v4 pipeline kept it): with
`handle_impossible_answer=True` the answer is "" (start = end = 0) when it beats the best span.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Answer:
    answer: str  # "" when the question has no answer in the context
    start: int  # characters of the context
    end: int
    score: float  # p(start) * p(end) of the best span, or the null score for ""
    null_score: float  # p(start=[CLS]) * p(end=[CLS]), the least over the windows

    def as_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "start": self.start,
            "end": self.end,
            "score": self.score,
            "null_score": self.null_score,
        }


MAX_WINDOW = 512  # tokens; what BERT-sized readers are trained on


def window_length(tokenizer: Any, model: Any) -> int:
    """The most tokens a model reads at once (specials included): its position embeddings,
    the tokenizer's model_max_length where it says one, at most MAX_WINDOW. Texts and
    contexts longer than this are read in overlapping windows of this length."""
    limits = [getattr(model.config, "max_position_embeddings", None) or MAX_WINDOW, MAX_WINDOW]
    if tokenizer.model_max_length and tokenizer.model_max_length < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    return min(limits)


def qa_windows(
    tokenizer: Any,
    questions: Sequence[str],
    contexts: Sequence[str],
    *,
    max_seq_len: int,
    doc_stride: int,
) -> Any:
    """The fast tokenizer's overlapping windows of each (question, context) pair, with the
    offsets and `overflow_to_sample_mapping`; only the context is ever cut."""
    return tokenizer(
        list(questions),
        list(contexts),
        truncation="only_second",
        max_length=max_seq_len,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=True,
        return_tensors="pt",
    )


def window_count(
    tokenizer: Any, question: str, context: str, *, max_seq_len: int, doc_stride: int
) -> int:
    """How many windows a (question, context) pair is read in."""
    enc = qa_windows(
        tokenizer, [question], [context], max_seq_len=max_seq_len, doc_stride=doc_stride
    )
    return len(enc["input_ids"])


def _softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    masked = np.where(allowed, logits, -np.inf)
    exp = np.exp(masked - masked.max())
    return np.asarray(exp / exp.sum())


def best_span(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    context_mask: np.ndarray,
    max_answer_len: int,
) -> tuple[int, int, float, float]:
    """(start token, end token, span score, null score) of one window."""
    allowed = context_mask.copy()
    allowed[0] = True  # [CLS]
    p_start, p_end = _softmax(start_logits, allowed), _softmax(end_logits, allowed)
    null = float(p_start[0] * p_end[0])
    p_start, p_end = np.where(context_mask, p_start, 0.0), np.where(context_mask, p_end, 0.0)
    scores = np.triu(np.outer(p_start, p_end))  # end >= start
    scores = np.tril(scores, max_answer_len - 1)  # end - start < max_answer_len
    start, end = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(start), int(end), float(scores[start, end]), null


@dataclass(frozen=True)
class WindowLogits:
    """One window's model output and what is needed to read a span from it."""

    start_logits: np.ndarray
    end_logits: np.ndarray
    context_mask: np.ndarray  # True on the context's tokens
    offsets: Sequence[Sequence[int]]  # (start, end) characters of each token
    word_ids: Sequence[int | None] | None = None  # each token's word (None: no alignment)

    def characters(self, start: int, end: int) -> tuple[int, int]:
        """The context characters of tokens start..end, widened to whole words."""
        first, last = start, end
        if self.word_ids is not None and None not in (self.word_ids[start], self.word_ids[end]):
            same = [
                p
                for p, in_context in enumerate(self.context_mask)
                if in_context and self.word_ids[p] in (self.word_ids[start], self.word_ids[end])
            ]
            first = min(p for p in same if self.word_ids[p] == self.word_ids[start])
            last = max(p for p in same if self.word_ids[p] == self.word_ids[end])
        return int(self.offsets[first][0]), int(self.offsets[last][1])


@dataclass(frozen=True)
class Choice:
    """The best span of a question's windows and its no-answer score."""

    window: int  # the window the span was read in
    start_token: int
    end_token: int
    start: int  # characters of the context
    end: int
    score: float
    null_score: float  # the least of the windows' null scores
    null_window: int  # the window with that least null score

    def is_null(self, min_score: float = 0.0) -> bool:
        """No answer: the no-answer score beats the best span (v4's
        handle_impossible_answer), or the span scores under `min_score`."""
        return self.null_score > self.score or self.score < min_score


def choose(windows: Sequence[WindowLogits], max_answer_len: int) -> Choice:
    """The best span over a question's windows, in window order (the first of equal
    scores), and the least null score, as the v4 pipeline reduced them."""
    best: Choice | None = None
    null, null_window = 1.0, 0
    for w, win in enumerate(windows):
        s, e, score, window_null = best_span(
            win.start_logits, win.end_logits, win.context_mask, max_answer_len
        )
        if window_null < null:
            null, null_window = window_null, w
        if best is None or score > best.score:
            start, end = win.characters(s, e)
            best = Choice(w, s, e, start, end, score, 0.0, 0)
    if best is None:
        raise ValueError("a question needs at least one window")
    return Choice(**{**best.__dict__, "null_score": null, "null_window": null_window})


def answer_questions(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    contexts: Sequence[str],
    *,
    max_seq_len: int = 128,
    doc_stride: int = 48,
    max_answer_len: int = 15,
    handle_impossible_answer: bool = False,
) -> list[Answer]:
    """The best answer to each question in its context, windows batched through the model."""
    import torch

    if len(questions) != len(contexts):
        raise ValueError("one context per question")
    if not questions:
        return []
    enc = qa_windows(tokenizer, questions, contexts, max_seq_len=max_seq_len, doc_stride=doc_stride)
    inputs = {k: enc[k] for k in tokenizer.model_input_names if k in enc}
    with torch.no_grad():
        out = model(**inputs)
    starts, ends = out.start_logits.float().numpy(), out.end_logits.float().numpy()
    windows: dict[int, list[WindowLogits]] = {}
    for w, sample in enumerate(enc["overflow_to_sample_mapping"].tolist()):
        context_mask = np.array([s == 1 for s in enc.sequence_ids(w)])
        offsets = enc["offset_mapping"][w].tolist()
        windows.setdefault(sample, []).append(
            WindowLogits(starts[w], ends[w], context_mask, offsets, enc.word_ids(w))
        )
    answers = []
    for i, context in enumerate(contexts):
        c = choose(windows[i], max_answer_len)
        if handle_impossible_answer and c.null_score > c.score:
            answers.append(Answer("", 0, 0, c.null_score, c.null_score))
        else:
            answers.append(Answer(context[c.start : c.end], c.start, c.end, c.score, c.null_score))
    return answers
