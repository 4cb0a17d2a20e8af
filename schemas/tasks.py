"""The tasks Sluice knows, as data: which modality (and so which queue) each belongs to."""

from dataclasses import dataclass

from schemas.errors import UnknownTaskError


@dataclass(frozen=True)
class TaskInfo:
    name: str
    modality: str
    explainable: bool
    needs_labels: bool = False

    @property
    def queue(self) -> str:
        return f"sluice.{self.modality}"


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo("embed", "text", explainable=False),
        TaskInfo("zero-shot-text", "text", explainable=True, needs_labels=True),
        TaskInfo("classify-text", "text", explainable=True),
    )
}

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
