"""One adapter per modality (see base.py); `adapter_for` is the only place that picks one."""

from producers.adapters.base import ModalityAdapter, ReadOptions
from producers.adapters.media_items import MediaItems
from producers.adapters.record_items import RecordItems
from producers.adapters.text_items import TextItems
from schemas.modalities import Modality

ADAPTERS: dict[Modality, ModalityAdapter] = {
    Modality.TEXT: TextItems(),
    Modality.IMAGE: MediaItems(Modality.IMAGE),
    Modality.AUDIO: MediaItems(Modality.AUDIO),
    Modality.RECORDS: RecordItems(),
}


def adapter_for(modality: Modality) -> ModalityAdapter:
    return ADAPTERS[modality]


__all__ = ["ModalityAdapter", "ReadOptions", "adapter_for"]
