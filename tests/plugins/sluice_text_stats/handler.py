"""The handler of text-stats: no model, so setup loads nothing."""

from typing import Any

from schemas.errors import InvalidInput
from schemas.jobs import Item
from workers.handlers.base import Handler


class TextStatsHandler(Handler):
    def setup(self, model_path: str, device: str) -> None:
        self.device = device

    def preprocess(self, item: Item, params: dict[str, Any]) -> tuple[list[str], int]:
        if not isinstance(item.text, str) or not item.text.strip():
            raise InvalidInput("text-stats needs a non-empty text")
        return item.text.split(), int(params.get("min_word_length", 5))

    def predict(self, batch: list[tuple[list[str], int]]) -> list[dict[str, Any]]:
        return [
            {
                "words": len(words),
                "characters": sum(len(w) for w in words),
                "longest_word": max(words, key=len),
                "long_words": sum(len(w) >= minimum for w in words),
            }
            for words, minimum in batch
        ]
