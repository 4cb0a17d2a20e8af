"""`answer-question`: extractive question answering (AutoModelForQuestionAnswering) over
contexts of any length, as transformers 4's question-answering pipeline answered
(workers/extractive_qa.py), with the windows of a whole batch padded together by length.

An item arrives prepared by the producer: `text` is the context, `fields["question"]` the
question. A context longer than the model's window is read in overlapping windows
("[CLS] question [SEP] part of the context [SEP]"), consecutive ones sharing `stride` context
tokens. Output per row:

- `answer`: the best span of any window, as characters of the context; null (None) when the
  context holds no answer: the model's no-answer score (`null_score`, the least over the
  windows of p_start([CLS]) * p_end([CLS]), as the v4 pipeline kept it) beats the best span's
  score (v4's handle_impossible_answer=True), or the best span scores under `min_score`;
- `score`: the score of what is given: p(start) * p(end) of the span, or, for a null answer,
  the no-answer score (so a null answer's score can be under `min_score`);
- `start`, `end`: the span's characters in the context (None with no answer);
- `null_score`: the no-answer score, given either way.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from schemas.errors import InvalidInput, ModelError
from schemas.jobs import Explanation, Item
from schemas.reading_params import DEFAULT_STRIDE, AnswerQuestionParams
from workers.explain.spans import (
    METHOD,
    TokenWindow,
    attribute_windows,
    batch_or_each,
    pad_windows,
    words,
)
from workers.extractive_qa import Choice, WindowLogits, choose, window_length
from workers.handlers.base import WINDOWS_PER_PASS, Handler, run_by_length
from workers.safe_loading import load_pretrained

DEFAULT_MAX_ANSWER_TOKENS = int(AnswerQuestionParams.model_fields["max_answer_tokens"].default)
MAX_CHARS = 1_000_000  # the producer's cap (SLUICE_MAX_TEXT_CHARS) is the user-facing one


@dataclass
class QuestionFeatures:
    question: str
    context: str
    windows: list[TokenWindow]
    max_answer_tokens: int
    min_score: float
    choice: Choice | None = None  # set by predict, read by explain


class AnswerQuestionHandler(Handler):
    def setup(self, model_path: str, device: str) -> None:
        self.device = torch.device(device)
        self.tokenizer = load_pretrained(AutoTokenizer, model_path)
        if not self.tokenizer.is_fast:
            raise ModelError(
                f"{model_path}: answer-question needs a fast tokenizer (a tokenizer.json) for "
                "the answers' character offsets; save the model with its fast tokenizer"
            )
        self.model = load_pretrained(AutoModelForQuestionAnswering, model_path)
        self.model = self.model.to(self.device).eval()
        self.window = window_length(self.tokenizer, self.model)

    def preprocess(self, item: Item, params: dict[str, Any]) -> QuestionFeatures:
        question = (item.fields or {}).get("question")
        for value, name in ((question, "question"), (item.text, "context")):
            if problem := input_problem(value, name):
                raise InvalidInput(problem)
        assert isinstance(question, str) and isinstance(item.text, str)  # checked just above
        stride = self.window_stride(question, item.text, int(params.get("stride", DEFAULT_STRIDE)))
        enc = self.tokenizer(
            question,
            item.text,
            truncation="only_second",
            max_length=self.window,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        windows = [
            TokenWindow(
                input_ids=enc["input_ids"][w],
                offsets=[tuple(o) for o in enc["offset_mapping"][w]],
                word_ids=enc.word_ids(w),
                sequence_ids=enc.sequence_ids(w),
                token_type_ids=enc["token_type_ids"][w] if "token_type_ids" in enc else None,
            )
            for w in range(len(enc["input_ids"]))
        ]
        return QuestionFeatures(
            question,
            item.text,
            windows,
            int(params.get("max_answer_tokens", DEFAULT_MAX_ANSWER_TOKENS)),
            float(params.get("min_score", 0.0)),
        )

    def window_stride(self, question: str, context: str, stride: int) -> int:
        """The stride the context is cut with: 0 where it fits whole in one window (nothing
        is shared; the tokenizer refuses a stride over its room even then), else `stride`.
        InvalidInput where windows sharing `stride` tokens cannot hold the context beside the
        question (the tokenizer would panic: each window must hold more than it shares)."""
        used = len(self.tokenizer(question, add_special_tokens=False)["input_ids"])
        used += self.tokenizer.num_special_tokens_to_add(pair=True)
        room = self.window - used
        if room > stride:
            return stride
        if room > 0 and len(self.tokenizer(context, add_special_tokens=False)["input_ids"]) <= room:
            return 0
        raise InvalidInput(
            f"the question takes {used} of the model's {self.window}-token window, leaving "
            f"{max(room, 0)} for the context, and windows share {stride} tokens of it; ask a "
            "shorter question or give a smaller stride"
        )

    def logits(self, windows: list[TokenWindow]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Start and end logits of each window, windows of similar length padded together."""

        def run(idx: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
            group = [windows[i] for i in idx]
            inputs = {k: v.to(self.device) for k, v in pad_windows(self.tokenizer, group).items()}
            with torch.inference_mode():
                out = self.model(**inputs)
            starts = out.start_logits.float().cpu().numpy()
            ends = out.end_logits.float().cpu().numpy()
            return [
                (starts[j, : len(w.input_ids)], ends[j, : len(w.input_ids)])
                for j, w in enumerate(group)
            ]

        return run_by_length([len(w.input_ids) for w in windows], run, most=WINDOWS_PER_PASS)

    def choose(self, batch: list[QuestionFeatures]) -> list[Choice]:
        flat = [(i, w) for i, f in enumerate(batch) for w in f.windows]
        logits = self.logits([w for _, w in flat])
        per_item: list[list[WindowLogits]] = [[] for _ in batch]
        for (i, w), (start, end) in zip(flat, logits, strict=True):
            context = np.array([s == 1 for s in w.sequence_ids])
            per_item[i].append(WindowLogits(start, end, context, w.offsets, w.word_ids))
        return [choose(wl, f.max_answer_tokens) for wl, f in zip(per_item, batch, strict=True)]

    def predict(self, batch: list[QuestionFeatures]) -> list[dict[str, Any]]:
        outputs = []
        for f, c in zip(batch, self.choose(batch), strict=True):
            f.choice = c
            null = c.is_null(f.min_score)
            outputs.append(
                {
                    "answer": None if null else f.context[c.start : c.end],
                    "score": c.null_score if null else c.score,
                    "start": None if null else c.start,
                    "end": None if null else c.end,
                    "null_score": c.null_score,
                }
            )
        return outputs

    def confidence(self, output: dict[str, Any]) -> float | None:
        return float(output["score"])

    def explain(
        self,
        batch: list[QuestionFeatures],
        outputs: list[dict[str, Any]],
        steps: int,
        internal_batch_size: int,
    ) -> list[Explanation]:
        """Attributions over the question's and the context's words of one window, for the
        start + end logits of the answer given: the answer's own window and tokens, or, for a
        null answer, [CLS] in the window with the least no-answer score (the window closest to
        holding an answer)."""
        missing = [f for f in batch if f.choice is None]
        for f, c in zip(missing, self.choose(missing) if missing else [], strict=True):
            f.choice = c

        def run(idx: list[int]) -> list[Explanation]:
            targets = [explained_target(batch[i], outputs[i]) for i in idx]
            windows = [batch[i].windows[w] for i, (w, _, _) in zip(idx, targets, strict=True)]
            scores, deltas = attribute_windows(
                self.model,
                self.tokenizer,
                windows,
                span_logits,
                [
                    torch.tensor([s for _, s, _ in targets]),
                    torch.tensor([e for _, _, e in targets]),
                ],
                steps,
                internal_batch_size,
            )
            return [
                answer_explanation(batch[i], outputs[i], w, s, d)
                for i, (w, _, _), s, d in zip(idx, targets, scores, deltas, strict=True)
            ]

        return batch_or_each(run, len(batch))


def input_problem(value: Any, name: str) -> str | None:
    """Why a question or context cannot be read, or None (the producer checked already; a
    chunk written by another producer version is checked again here)."""
    if value is None:
        return f"the item has no {name}"
    if not isinstance(value, str):
        return f"the {name} is {type(value).__name__}, expected a string"
    if not value.strip():
        return f"the {name} is empty"
    if len(value) > MAX_CHARS:
        return f"the {name} is {len(value)} characters, over the cap of {MAX_CHARS}"
    return None


def span_logits(out: Any, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """The start logit at `starts` plus the end logit at `ends`, one per row."""
    start = out.start_logits.gather(1, starts.unsqueeze(1)).squeeze(1)
    return start + out.end_logits.gather(1, ends.unsqueeze(1)).squeeze(1)


def explained_target(f: QuestionFeatures, output: dict[str, Any]) -> tuple[int, int, int]:
    """(window, start token, end token) an explanation is taken for: [CLS] (token 0) when
    the answer is null."""
    c = f.choice
    assert c is not None  # explain sets it first
    if output.get("answer") is None:
        return c.null_window, 0, 0
    return c.window, c.start_token, c.end_token


def answer_explanation(
    f: QuestionFeatures, output: dict[str, Any], window: int, scores: list[float], delta: float
) -> Explanation:
    """Explanation.tokens: the question's words, then the window's words of the context;
    detail.offsets their characters (of the question, then of the context), so a report can
    colour the context itself."""
    w = f.windows[window]
    found = words(w, [f.question, f.context], scores)
    context = [x for x in found if x.part == 1]
    answer = output.get("answer")
    return Explanation(
        method=METHOD,
        target=answer if answer is not None else "no answer",
        tokens=[x.text for x in found],
        attributions=[x.attribution for x in found],
        convergence_delta=delta,
        detail={
            "question_words": len(found) - len(context),
            "offsets": [[x.start, x.end] for x in found],
            "window": {
                "index": window,
                "count": len(f.windows),
                "start": context[0].start if context else 0,
                "end": context[-1].end if context else 0,
            },
            "answer": None
            if answer is None
            else {"text": answer, "start": output["start"], "end": output["end"]},
            "logits": "start + end of the answer's span"
            if answer is not None
            else "start + end at [CLS], the model's no-answer",
        },
    )
