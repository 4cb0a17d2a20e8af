"""Task name -> handler class. Adding a task is adding a class here."""

from workers.handlers.base import Handler


def handler_for(task: str) -> Handler:
    from workers.handlers.text import HANDLERS  # torch is imported only where a model lives

    try:
        return HANDLERS[task]()
    except KeyError:
        raise ValueError(f"no handler for task {task!r}") from None


__all__ = ["Handler", "handler_for"]
