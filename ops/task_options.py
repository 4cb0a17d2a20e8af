"""The catalog's task parameters as command-line options: every field of every task's
parameters model becomes `--field-name` on `sluice submit` and `sluice enrich`, with the
tasks that take it in its help. Values are checked by the task's parameters model at submit,
so an option given to a task that does not take it is refused with the task's parameters."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from schemas.catalog import Catalog
from schemas.errors import SluiceError
from schemas.task_spec import field_kind, parse_param_text

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def param_options(catalog: Catalog) -> list[Decorator]:
    options: list[Decorator] = []
    for name, (field, tasks) in sorted(catalog.parameters().items()):
        kind = field_kind(field.annotation)
        help_text = f"{field.description or name} [{', '.join(tasks)}]"
        if kind is bool:
            options.append(
                click.option(
                    f"{option_name(name)}/--no-{name.replace('_', '-')}",
                    name,
                    default=None,
                    help=help_text,
                )
            )
        elif kind in (int, float):
            options.append(
                click.option(option_name(name), name, type=kind, default=None, help=help_text)
            )
        elif kind is list and is_repeatable(field):
            options.append(
                click.option(
                    option_name(name), name, multiple=True, help=f"{help_text} (repeat the option)"
                )
            )
        elif kind is list:
            options.append(
                click.option(option_name(name), name, default=None, help=f"{help_text}: a,b,c")
            )
        elif kind is dict:
            options.append(
                click.option(
                    option_name(name),
                    name,
                    default=None,
                    help=f"{help_text}: a JSON file (or inline JSON)",
                )
            )
        else:
            options.append(click.option(option_name(name), name, default=None, help=help_text))
            if reads_file(field):
                options.append(
                    click.option(
                        f"{option_name(name)}-file",
                        f"{name}_file",
                        default=None,
                        help=f"{option_name(name)} read from a UTF-8 file",
                    )
                )
    return options


def is_repeatable(field: Any) -> bool:
    """A list given as repeated options, each value as it is (json_schema_extra
    {"repeatable": True}): its values may hold commas."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("repeatable"))


def reads_file(field: Any) -> bool:
    """A text parameter that may also come from a file (`--prompt-file`): its field says
    so with json_schema_extra={"file_option": True}."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("file_option"))


def read_text_file(option: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SluiceError(f"{option} {path}: cannot read the file: {exc}") from exc


def with_param_options(catalog: Catalog) -> Decorator:
    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(param_options(catalog)):
            fn = option(fn)
        return fn

    return apply


def param_values(catalog: Catalog, given: dict[str, Any]) -> dict[str, Any]:
    """The task parameters among the command's keyword arguments, parsed from their text."""
    known = catalog.parameters()
    values = {}
    given = dict(given)
    for name, (field, _) in known.items():
        path = given.pop(f"{name}_file", None)
        if path is None or not reads_file(field):
            continue
        if given.get(name) is not None:
            raise SluiceError(f"give {option_name(name)} or {option_name(name)}-file, not both")
        given[name] = read_text_file(f"{option_name(name)}-file", path)
    for name, raw in given.items():
        if name not in known or raw is None or raw == ():
            continue
        if isinstance(raw, tuple):  # a repeated option: its values as given
            values[name] = list(raw)
            continue
        annotation = known[name][0].annotation
        if field_kind(annotation) is dict and not raw.lstrip().startswith("{"):
            raw = read_text_file(option_name(name), raw)  # a JSON file
        values[name] = (
            parse_param_text(option_name(name), annotation, raw) if isinstance(raw, str) else raw
        )
    return values
