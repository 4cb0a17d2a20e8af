"""The task catalog: every AI task Sluice runs is declared here once, as a `TaskSpec`.

A spec names its modality, its handler and training recipe by dotted path (so producers
never load workers/), its explainer, a typed parameters model (the CLI options, SDK keyword
arguments, REST request schema and `sluice enrich` are derived from it), its model
requirements, trainable and DP support, chunk size and output shape. Everything else asks the
catalog; nothing else lists tasks.

Tasks from outside the package register alike in every process (CLI, API, worker):
- an entry point in the group `sluice.tasks` whose object is a TaskSpec or a list of them;
- a module named in `SLUICE_TASK_MODULES=pkg.mod[,pkg.other]` with a list `SLUICE_TASKS`.
"""

import ast
import functools
import importlib
import importlib.metadata
import importlib.util
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.builtin_tasks import BUILTIN_TASKS
from schemas.errors import ConfigError, UnknownTaskError
from schemas.modalities import Modality
from schemas.task_spec import (
    ExplainerSpec,
    ModelFiles,
    ModelKind,
    ModelNeeds,
    OutputShape,
    Target,
    TaskParams,
    TaskSpec,
    TrainingSupport,
    split_path,
)

# What a task's author imports: `from schemas.catalog import TaskSpec, Modality, ...`.
__all__ = [
    "Catalog",
    "ExplainerSpec",
    "Modality",
    "ModelFiles",
    "ModelKind",
    "ModelNeeds",
    "OutputShape",
    "Target",
    "TaskParams",
    "TaskSpec",
    "TrainingSupport",
    "load_catalog",
    "unknown_task_message",
]

ENTRY_POINT_GROUP = "sluice.tasks"
MODULE_ATTRIBUTE = "SLUICE_TASKS"
# Sluice's own top-level packages: their handlers are checked by the test suite, and a
# producer never looks inside workers/.
OWN_PACKAGES = ("schemas", "storage", "producers", "workers", "ops")


TASK_NAME = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
# Options every job already has: a task parameter may not take their names.
RESERVED_PARAMS = frozenset(
    {
        # sluice enrich's and sluice submit's own options
        "table",
        "dest_table",
        "dest_url",
        "since_column",
        "where",
        "full",
        "timeout",
        "source_url",
        "as_json",
        "task",
        "model",
        "explain",
        "priority",
        "source",
        "ref",
        "tenant",
        "api_key_id",
        "callback_url",
        "parent_job_id",
        "idempotency_key",
        "items",
        "key",
        "text",
        "media",
        "record",
        "key_column",
        "text_column",
        "media_column",
        "model_path",
        "registry",
        "media_limits",
        "input_roots",
        "file",
        "wait",
        "json",
    }
)


class Catalog:
    """The tasks this process knows: the built-in ones and those registered from outside.
    Each is checked against the others as it registers; `problems()` says what is wrong."""

    def __init__(self, specs: list[tuple[TaskSpec, str]]) -> None:
        self._specs: dict[str, TaskSpec] = {}
        self.origins: dict[str, str] = {}
        for spec, origin in specs:
            if not isinstance(spec, TaskSpec):
                raise ConfigError(
                    f"{origin} registers {spec!r}, which is not a schemas.catalog.TaskSpec"
                )
            if spec.name in self._specs and self._specs[spec.name] == spec:
                continue  # the same spec by two routes (an entry point and the setting)
            if spec.name in self._specs:
                raise ConfigError(
                    f"task {spec.name!r} is registered twice: by "
                    f"{self.origins[spec.name]} and by {origin}"
                )
            self._specs[spec.name] = spec
            self.origins[spec.name] = origin
            found = self.problems()
            if found:
                raise ConfigError(f"{origin}: {'; '.join(found)}")

    def problems(self) -> list[str]:
        """What makes the catalog inconsistent: bad names or paths, a parameter that takes
        a job option's name, or one name with two types."""
        found = []
        types: dict[str, tuple[Any, str]] = {}
        for spec in self._specs.values():
            if not TASK_NAME.match(spec.name):
                found.append(
                    f"task name {spec.name!r}: use lower-case letters, digits and "
                    "'-', starting with a letter"
                )
            paths = [spec.handler, *([spec.training.recipe] if spec.training else [])]
            found += [
                f"task {spec.name}: {p!r} is not a 'module:Class' path"
                for p in paths
                if not _is_code_path(p)
            ]
            if spec.chunk_size < 1:
                found.append(f"task {spec.name}: chunk_size must be at least 1")
            for name, field in spec.params.model_fields.items():
                if name in RESERVED_PARAMS:
                    found.append(
                        f"task {spec.name}: parameter {name!r} is a job option's "
                        "name; choose another"
                    )
                seen = types.setdefault(name, (field.annotation, spec.name))
                if seen[0] != field.annotation:
                    found.append(
                        f"parameter {name!r} is {field.annotation} in task "
                        f"{spec.name} but {seen[0]} in task {seen[1]}"
                    )
        return found

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


def _is_code_path(path: str) -> bool:
    module, sep, name = path.partition(":")
    return bool(
        sep
        and module
        and name.isidentifier()
        and all(part.isidentifier() for part in module.split("."))
    )


def check_code_path(path: str, what: str) -> None:
    """A handler or recipe that cannot be found fails here, at submit, naming the path
    (ConfigError). The module is only read, never run (it may import torch, and a producer
    never loads workers/): it must exist and define the name."""
    module, name = split_path(path)
    problem = _code_path_problem(module, name)
    if problem:
        raise ConfigError(f"{what} {path} does not import: {problem}")


@functools.lru_cache(maxsize=256)
def _code_path_problem(module: str, name: str) -> str | None:
    origin = _module_file(module)
    if origin is None:
        return f"no module named {module!r}"
    if not origin.endswith(".py"):
        return None  # compiled: nothing to read, the worker's import says more
    try:
        tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    names = _top_level_names(tree)
    if name not in names and "*" not in names:
        return f"{module} defines no {name!r}"
    return None


def _module_file(module: str) -> str | None:
    """Where a module's source is. Sluice's own are found beside this package without
    importing anything; for others, their parent packages are imported to find it."""
    parts = module.split(".")
    if parts[0] in OWN_PACKAGES:
        base = Path(__file__).resolve().parent.parent.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return str(candidate)
        return None
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return found.origin if found is not None else None


def _top_level_names(tree: ast.Module) -> set[str]:
    """What a module defines at its top level ('*' for a star import: anything may come)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


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
