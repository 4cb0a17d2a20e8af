"""Task name -> handler class. Adding a task is adding a class to its modality's module."""

import importlib

from schemas.tasks import task_info
from workers.handlers.base import Handler

# torch and the model libraries are imported only when a model actor needs them.
MODULES = {
    "text": "workers.handlers.text",
    "image": "workers.handlers.image",
    "audio": "workers.handlers.audio",
    "records": "workers.handlers.records",
}


def handler_class(task: str) -> type[Handler]:
    module = importlib.import_module(MODULES[task_info(task).modality])
    handlers: dict[str, type[Handler]] = module.HANDLERS
    try:
        return handlers[task]
    except KeyError:
        raise ValueError(f"no handler for task {task!r}") from None


def handler_for(task: str) -> Handler:
    return handler_class(task)()


__all__ = ["Handler", "handler_class", "handler_for"]
