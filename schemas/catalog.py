"""The task catalog: every AI task Sluice runs is declared here once, as a `TaskSpec`.

A spec names its modality, its handler and training recipe by dotted path (producers never
import workers/), its explainer, a typed parameters model (the CLI options, SDK keyword
arguments, REST request schema and `sluice enrich` are derived from it), its model
requirements, trainable and DP support, chunk size and output shape. Everything else asks the
catalog; nothing else lists tasks.

Tasks from outside the package register alike in every process (CLI, API, worker):
- an entry point in the group `sluice.tasks` whose object is a TaskSpec or a list of them;
- a module named in `SLUICE_TASK_MODULES=pkg.mod[,pkg.other]` with a list `SLUICE_TASKS`.
"""

import importlib
import importlib.metadata
import threading
from collections.abc import Iterator
from typing import Any

from schemas.builtin_tasks import BUILTIN_TASKS
from schemas.errors import ConfigError, UnknownTaskError
from schemas.task_spec import TaskSpec

ENTRY_POINT_GROUP = "sluice.tasks"
MODULE_ATTRIBUTE = "SLUICE_TASKS"


class Catalog:
    """The tasks this process knows: the built-in ones and those registered from outside."""

    def __init__(self, specs: list[tuple[TaskSpec, str]]) -> None:
        self._specs: dict[str, TaskSpec] = {}
        self.origins: dict[str, str] = {}
        for spec, origin in specs:
            if not isinstance(spec, TaskSpec):
                raise ConfigError(
                    f"{origin} registers {spec!r}, which is not a schemas.catalog.TaskSpec"
                )
            if spec.name in self._specs:
                raise ConfigError(
                    f"task {spec.name!r} is registered twice: by "
                    f"{self.origins[spec.name]} and by {origin}"
                )
            self._specs[spec.name] = spec
            self.origins[spec.name] = origin

    def get(self, name: str) -> TaskSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownTaskError(unknown_task_message(name, self.names())) from None

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(self._specs[n] for n in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def trainable(self) -> list[str]:
        return [s.name for s in self if s.trainable]

    def queues(self) -> list[str]:
        return sorted({s.queue for s in self})

    def parameters(self) -> dict[str, tuple[Any, list[str]]]:
        """Every parameter any task takes: its pydantic field and the tasks taking it."""
        found: dict[str, tuple[Any, list[str]]] = {}
        for spec in self:
            for name, field in spec.params.model_fields.items():
                if name in found:
                    found[name][1].append(spec.name)
                else:
                    found[name] = (field, [spec.name])
        return found


def unknown_task_message(name: str, known: list[str]) -> str:
    return f"unknown task {name!r}; known tasks: {', '.join(known)}"


def _from_entry_points() -> list[tuple[TaskSpec, str]]:
    found = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP})"
        try:
            value = ep.load()
        except Exception as exc:
            raise ConfigError(f"{origin} does not import: {type(exc).__name__}: {exc}") from exc
        found += [(s, origin) for s in _as_list(value)]
    return found


def _from_modules(names: str) -> list[tuple[TaskSpec, str]]:
    found = []
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        origin = f"module {name} (SLUICE_TASK_MODULES)"
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(
                f"{origin} does not import: {type(exc).__name__}: {exc}; "
                "is it installed or on PYTHONPATH?"
            ) from exc
        if not hasattr(module, MODULE_ATTRIBUTE):
            raise ConfigError(f"{origin} has no {MODULE_ATTRIBUTE} list of TaskSpec")
        found += [(s, origin) for s in _as_list(getattr(module, MODULE_ATTRIBUTE))]
    return found


def _as_list(value: Any) -> list[Any]:
    if callable(value) and not isinstance(value, TaskSpec):
        value = value()
    return list(value) if isinstance(value, list | tuple) else [value]


_cache: dict[str, Catalog] = {}
_lock = threading.Lock()


def load_catalog(task_modules: str = "") -> Catalog:
    """The built-in tasks, entry points and SLUICE_TASK_MODULES, read once per process."""
    with _lock:
        if task_modules not in _cache:
            builtin = [(s, "sluice") for s in BUILTIN_TASKS]
            _cache[task_modules] = Catalog(
                builtin + _from_entry_points() + _from_modules(task_modules)
            )
        return _cache[task_modules]
