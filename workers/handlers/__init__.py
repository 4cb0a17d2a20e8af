"""Handlers by the catalog's dotted path: a task's spec names its class, nothing here lists
tasks. torch and the model libraries load only when a model actor imports a handler."""

from schemas.errors import ConfigError
from schemas.task_spec import TaskSpec, import_object
from workers.handlers.base import Handler


def handler_class(path: str) -> type[Handler]:
    """The Handler subclass a 'module:Class' path names; ConfigError naming the path if not."""
    try:
        cls = import_object(path)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"handler {path} does not import: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Handler)):
        raise ConfigError(f"handler {path} is not a workers.handlers.base.Handler subclass")
    return cls


def make_handler(path: str, explain_method: str = "none") -> Handler:
    handler = handler_class(path)()
    handler.explain_method = explain_method
    return handler


def handler_for(spec: TaskSpec) -> Handler:
    """A fresh handler for a task, told its explainer's method (recorded on explanations)."""
    return make_handler(spec.handler, spec.explainer.method if spec.explainer else "none")


__all__ = ["Handler", "handler_class", "handler_for", "make_handler"]
