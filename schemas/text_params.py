"""How the text tasks (`embed`, `classify-text`, `zero-shot-text`) read a text longer than the
model's window: `truncate` (the default) reads its first window and every row says so
(`truncated`, `tokens_used`, `tokens_total`); `windows` reads all of it in overlapping
windows of the model's length, `stride` tokens shared by consecutive ones, and pools them:
embeddings by their mean (L2-normalised again), class probabilities by `window_pooling`."""

from typing import Literal

from pydantic import Field

from schemas.task_spec import TaskParams

TRUNCATE = "truncate"
WINDOWS = "windows"
DEFAULT_WINDOW_STRIDE = 32  # tokens consecutive windows share
MAX_WINDOW_STRIDE = 256  # as the reading tasks' stride; a window shares at most half of itself

LONG_TEXT = (
    "what a text longer than the model's window becomes: `truncate` (the default) reads its "
    "first window, the row saying `truncated` with `tokens_used` of `tokens_total`; "
    "`windows` reads all of it in overlapping windows of the model's length and pools them "
    "(the row says how many `windows`)"
)
STRIDE = (
    "under `windows`: tokens consecutive windows share, so words at a window's edge are "
    "read whole in the next (at most half a window: less where the model's window is short)"
)
POOLING = (
    "under `windows`: how the windows' class probabilities make the row's: `mean` (the "
    "default; they still sum to 1) or `max` (each label's highest probability in any "
    "window: one decisive passage decides; they need not sum to 1)"
)


class LongTextParams(TaskParams):
    long_text: Literal["truncate", "windows"] = Field("truncate", description=LONG_TEXT)
    stride: int = Field(DEFAULT_WINDOW_STRIDE, ge=0, le=MAX_WINDOW_STRIDE, description=STRIDE)


class ClassifyTextParams(LongTextParams):
    window_pooling: Literal["mean", "max"] = Field("mean", description=POOLING)
