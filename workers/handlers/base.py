"""The handler contract: one small class per task. Handlers know nothing of Celery or Ray."""

from abc import ABC, abstractmethod
from typing import Any

from schemas.jobs import Explanation, Item


class Handler(ABC):
    # The catalog's explainer method for the task, set when the handler is made
    # (workers.handlers.make_handler); recorded on every explanation, failed ones too.
    explain_method: str = "none"

    @abstractmethod
    def setup(self, model_path: str, device: str) -> None:
        """Load the model once per actor."""

    @abstractmethod
    def preprocess(self, item: Item, params: dict[str, Any]) -> Any:
        """Per item; raise schemas.errors.InvalidInput for bad input."""

    @abstractmethod
    def predict(self, batch: list[Any]) -> list[dict[str, Any]]:
        """One JSON-able output per input, in order."""

    def confidence(self, output: dict[str, Any]) -> float | None:
        """How sure the prediction is (for the low-confidence explain policy)."""
        return None

    def explain(
        self, batch: list[Any], outputs: list[dict[str, Any]], steps: int, internal_batch_size: int
    ) -> list[Explanation]:
        raise NotImplementedError(f"{type(self).__name__} makes no explanations")
