"""The tasks Sluice knows, as data: which modality (and so which queue) each belongs to."""

from dataclasses import dataclass

from schemas.errors import UnknownTaskError


@dataclass(frozen=True)
class TaskInfo:
    name: str
    modality: str
    explainable: bool
    needs_labels: bool = False
    # Items per chunk (one Celery message) unless SLUICE_CHUNK_SIZE says otherwise: media items
    # are heavier to decode and explain than texts or records.
    chunk_size: int = 256

    @property
    def queue(self) -> str:
        return f"sluice.{self.modality}"


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo("embed", "text", explainable=False),
        TaskInfo("zero-shot-text", "text", explainable=True, needs_labels=True),
        TaskInfo("classify-text", "text", explainable=True),
        TaskInfo("classify-image", "image", explainable=True, chunk_size=32),
        TaskInfo("classify-audio", "audio", explainable=True, chunk_size=16),
        TaskInfo("transcribe", "audio", explainable=False, chunk_size=16),
        TaskInfo("classify-records", "records", explainable=True, chunk_size=512),
        TaskInfo("regress-records", "records", explainable=True, chunk_size=512),
    )
}

MODALITIES = ("text", "image", "audio", "records")
CONTROL_QUEUE = "sluice.control"
PROCESS_CHUNK = "sluice.process_chunk"
SWEEP = "sluice.sweep"


def task_info(name: str) -> TaskInfo:
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(
            f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}"
        ) from None
