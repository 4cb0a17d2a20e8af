"""The handler contract: one small class per task. Handlers know nothing of Celery or Ray."""

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from schemas.jobs import Explanation, Item

R = TypeVar("R")

# A batch from the actor mixes inputs of any length (clips, token sequences), and a model's
# input is padded to its longest: one 30 s clip among 31 of 1 s made a 32 x 30 s tensor, 94%
# of it padding. Inputs run in groups of similar length instead (run_by_length): within a
# group the longest is at most PAD_RATIO times the shortest, so at most half of any model
# input is padding (padded size <= 2 x real) whatever the mix. The price is more model calls,
# at most 1 + log2(longest / shortest) of them: measured on the demo audio classifier on CPU,
# a call's fixed cost is ~3 ms against ~40 ms for 16 clips of 1 s, small next to the padding
# saved, so no floor on short inputs (fewer calls, more padding) was worth adding. Measured
# by bench/modalities.py (d): batches of one 30 s clip and 31 short ones ran ~20x faster
# than padded to the longest, the model fed 1.15 samples per real one instead of 13.
PAD_RATIO = 2.0
# Windows (a long context or text is read in many) given to one forward pass at most: a chunk
# of 64 contexts of 20,000 characters made 3,200 windows, one (3200, 128) pass and 3.6 GB on a
# toy reader; a BERT-sized one would need tens of GB. Slices of this many keep a pass's memory
# bounded by what max_batch_size texts of one window would take.
WINDOWS_PER_PASS = 64


class Handler(ABC):
    # The catalog's explainer method for the task, set when the handler is made
    # (workers.handlers.make_handler); recorded on every explanation, failed ones too.
    explain_method: str = "none"
    # The precision to load the model in (a torch dtype name: float32, bfloat16, float16),
    # set by the runtime before setup (workers/runtime/devices.py); a handler that cannot
    # run in another precision ignores it.
    inference_dtype: str = "float32"
    # Whether preprocess may run on another thread than predict (at the same time): the
    # runtime then tokenises off the model's thread on a GPU. Only for handlers whose
    # preprocess shares nothing unsafe with predict (a fast tokenizer: one per thread).
    preprocess_off_model_thread: bool = False

    @abstractmethod
    def setup(self, model_path: str, device: str) -> None:
        """Load the model once per actor."""

    @abstractmethod
    def preprocess(self, item: Item, params: dict[str, Any]) -> Any:
        """Per item; raise schemas.errors.InvalidInput for bad input."""

    @abstractmethod
    def predict(self, batch: list[Any]) -> list[dict[str, Any]]:
        """One JSON-able output per input, in order."""

    def size(self, features: Any) -> int:
        """What one preprocessed input costs a model call padded to it (a text's tokens); 1
        for inputs of a fixed shape. The runtime sorts and budgets batches by it."""
        return 1

    def confidence(self, output: dict[str, Any]) -> float | None:
        """How sure the prediction is (for the low-confidence explain policy)."""
        return None

    def explain(
        self, batch: list[Any], outputs: list[dict[str, Any]], steps: int, internal_batch_size: int
    ) -> list[Explanation]:
        raise NotImplementedError(f"{type(self).__name__} makes no explanations")


class PerThread(Generic[R]):
    """One `make()` per thread that asks: a Hugging Face fast tokenizer must not be used from
    two threads at once (its Rust state is borrowed mutably: "Already borrowed")."""

    def __init__(self, make: Callable[[], R]) -> None:
        self.make = make
        self.local = threading.local()

    def get(self) -> R:
        value: R | None = getattr(self.local, "value", None)
        if value is None:
            value = self.local.value = self.make()
        return value


def length_groups(
    lengths: Sequence[int], max_ratio: float = PAD_RATIO, most: int | None = None
) -> list[list[int]]:
    """Positions into `lengths` in groups of similar length, shortest group first: within a
    group the longest is at most `max_ratio` times the shortest, so padding a group to its
    longest at most multiplies its real length by `max_ratio`, whatever the mix. There are at
    most 1 + log(longest / shortest, max_ratio) groups (more with `most`: at most that many
    positions a group)."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        fits = most is None or (groups and len(groups[-1]) < most)
        if groups and fits and lengths[i] <= max_ratio * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def run_by_length(
    lengths: Sequence[int],
    run: Callable[[list[int]], list[R]],
    max_ratio: float = PAD_RATIO,
    most: int | None = None,
) -> list[R]:
    """`run` on each of `length_groups(...)` (it gets the positions of one group and returns one
    result per position); the results back in the original order."""
    out: list[Any] = [None] * len(lengths)
    for group in length_groups(lengths, max_ratio, most):
        for i, result in zip(group, run(group), strict=True):
            out[i] = result
    return out  # every position is in exactly one group
