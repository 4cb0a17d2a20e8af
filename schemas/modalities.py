"""The four kinds of input Sluice reads. A modality decides the queue a task's chunks travel on
and the checks every item of it passes in the worker before a model sees it; how items are
read and shown lives in one adapter per modality (producers/adapters/)."""

from enum import StrEnum

from schemas.jobs import Item, messages_problem, text_problem


class Modality(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    RECORDS = "records"

    @property
    def queue(self) -> str:
        return f"sluice.{self.value}"

    @property
    def is_media(self) -> bool:
        return self in (Modality.IMAGE, Modality.AUDIO)

    def item_problem(self, item: Item, max_text_chars: int) -> str | None:
        """Why the worker refuses this item before any model sees it, or None."""
        if item.invalid:
            return item.invalid
        if self is Modality.TEXT and item.messages is not None:  # a chat (OpenAI requests)
            return messages_problem(item.messages, max_text_chars)
        if self is Modality.TEXT:
            return text_problem(item.text, "text", max_text_chars)
        if self is Modality.RECORDS:
            return None if isinstance(item.record, dict) else "the item has no record"
        if item.path is None and item.data is None:
            return "the item has no media reference (path or data)"
        return None
