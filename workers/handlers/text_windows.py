"""A text cut into the model's windows (schemas/text_params.py says the policies): the
tokenizer's own overflow cuts it, so each window carries the model's special tokens, and
its offsets and word ids count characters and words of the WHOLE text (an explanation adds
a word's attributions over every window that holds it)."""

from dataclasses import dataclass
from typing import Any

import torch

from schemas.errors import InvalidInput
from schemas.text_params import WINDOWS


@dataclass
class TextWindow:
    text: str  # the whole text (offsets count its characters)
    input_ids: list[int]
    word_ids: list[int | None] | None
    offsets: list[tuple[int, int]] | None


@dataclass
class WindowedText:
    windows: list[TextWindow]  # one under `truncate`
    tokens_total: int  # the whole text's, special tokens included
    windowed: bool  # read under `windows` (the row says how many)

    @property
    def tokens_used(self) -> int:
        return self.tokens_total if self.windowed else len(self.windows[0].input_ids)

    def row_fields(self) -> dict[str, Any]:
        """What every row of a text task says of its text's length."""
        fields: dict[str, Any] = {
            "truncated": self.tokens_used < self.tokens_total,
            "tokens_used": self.tokens_used,
            "tokens_total": self.tokens_total,
        }
        if self.windowed:
            fields["windows"] = len(self.windows)
        return fields


def cut(tokenizer: Any, text: str, max_length: int, policy: str, stride: int) -> WindowedText:
    """`text` as the model reads it under `policy`: its first window (truncate), or all of
    it in windows of `max_length` tokens, consecutive ones sharing `stride` (at most half
    a window's room for text)."""
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    room = max_length - specials
    windows_wanted = policy == WINDOWS
    if windows_wanted and not tokenizer.is_fast:
        raise InvalidInput("long_text=windows needs a fast tokenizer (a tokenizer.json)")
    shared = min(stride, room // 2) if windows_wanted else 0
    fast = tokenizer.is_fast
    enc = tokenizer(
        text,
        truncation=True,
        max_length=max_length,
        stride=shared,
        return_overflowing_tokens=fast,
        return_offsets_mapping=fast,
    )
    if not fast:  # one window; the whole text counted apart
        ids = enc["input_ids"]
        total = len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        window = TextWindow(text, ids, None, None)
        return WindowedText([window], total + specials, False)
    rows = enc["input_ids"]
    windows = [
        TextWindow(text, rows[w], enc.word_ids(w), [tuple(o) for o in enc["offset_mapping"][w]])
        for w in range(len(rows) if windows_wanted else 1)
    ]
    if len(rows) == 1:
        return WindowedText(windows, len(rows[0]), windows_wanted)
    # each window after the first repeats the `shared` tokens before it
    content = [sum(s is not None for s in enc.sequence_ids(w)) for w in range(len(rows))]
    total = content[0] + sum(c - shared for c in content[1:]) + specials
    return WindowedText(windows, total, windows_wanted)


def pooled_probabilities(rows: torch.Tensor, pooling: str) -> torch.Tensor:
    """One item's class probabilities from its windows' (windows x classes)."""
    return rows.max(dim=0).values if pooling == "max" else rows.mean(dim=0)


def window_weights(rows: torch.Tensor, target: int, pooling: str) -> list[float]:
    """How much each window's probability of `target` counts in the item's (the weights its
    explanation adds the windows' attributions with): 1/W each under mean, all of it to the
    window that holds the max under max."""
    if pooling == "max":
        best = int(rows[:, target].argmax())
        return [1.0 if w == best else 0.0 for w in range(rows.shape[0])]
    return [1.0 / rows.shape[0]] * rows.shape[0]
