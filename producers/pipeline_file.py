"""Read a pipelines file (`sluice listen FILE`, TOML or YAML) into schemas.pipelines' models.

A listener's file is written by hand, so every mistake is reported at once, each on its own
line as `FILE:LINE: path: what is wrong`, the way compilers do: the user fixes them all in one
pass instead of one per run. Neither parser keeps positions in the data it returns, so the
lines come from a second look at the text: PyYAML's node tree, or a small scanner over TOML's
table headers and keys (tomllib has no positions at all).
"""

import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.errors import PipelineFileError
from schemas.pipelines import PipelinesFile, Sink, Source

__all__ = ["SUFFIXES", "load_pipelines", "parse_pipelines"]

Loc = tuple[str | int, ...]
Format = Literal["toml", "yaml"]
SUFFIXES: dict[str, Format] = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}

_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE = re.compile(rf"^\s*({_DOTTED})\s*=(.*)$")
_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_ML = ('"""', "'''")  # the delimiters of multi-line strings
# in a TOML value: what can hold a bracket that is not one (strings, comments), then brackets
_STRINGS = [*(rf"{q}[\s\S]*?{q}" for q in _ML), *_ML, r'"(?:[^"\\]|\\.)*"', "'[^']*'"]
_TOKEN = re.compile("|".join([*_STRINGS, "#.*", r"[][{}]"]))


def _kinds(union: Any) -> str:
    """The allowed `kind`s of a discriminated union, read from the schema so they never drift."""
    models = get_args(get_args(union)[0])
    return ", ".join(repr(get_args(m.model_fields["kind"].annotation)[0]) for m in models)


_KINDS = {"source": _kinds(Source), "sinks": _kinds(Sink), "dead_letter": _kinds(Sink)}


def load_pipelines(path: Path) -> PipelinesFile:
    """The file's pipelines; its suffix says its format (a guess would misread the other)."""
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise PipelineFileError(
            f"{path}: a pipelines file is TOML (.toml) or YAML (.yaml, .yml); "
            f"rename it with one of those suffixes (not {path.suffix or 'no suffix'!r})"
        )
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PipelineFileError(f"{path}: cannot be read ({e.strerror or e})") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise PipelineFileError(f"{path}:{line}: not UTF-8 text (save it as UTF-8)") from e
    return parse_pipelines(text, fmt, str(path))


def parse_pipelines(text: str, fmt: Format, name: str = "<pipelines>") -> PipelinesFile:
    """Pipelines from text in `fmt`; `name` is what the messages call the file."""
    if fmt not in ("toml", "yaml"):
        raise PipelineFileError(f"{name}: unknown format {fmt!r}; use 'toml' or 'yaml'")
    try:
        data, lines, problems = (_read_toml if fmt == "toml" else _read_yaml)(text, name)
    except RecursionError as e:  # both parsers recurse: a hostile file must not crash us
        raise PipelineFileError(f"{name}: nested too deeply to be a pipelines file") from e
    found: PipelinesFile | None = None
    try:
        found = PipelinesFile.model_validate(data)
    except ValidationError as e:
        problems += [_problem(error, data, lines) for error in e.errors()]
    if found is None or problems:
        problems.sort(key=lambda p: p[0])  # stable: pydantic's order within a line
        raise PipelineFileError("\n".join(f"{name}:{line}: {what}" for line, what in problems))
    return found


Read = tuple[Any, dict[Loc, int], list[tuple[int, str]]]  # data, lines, mistakes found early


def _read_toml(text: str, name: str) -> Read:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        at = _TOML_AT.search(message)
        line, where = (int(at[1]), f" (column {at[2]})") if at else (1, "")
        raise PipelineFileError(
            f"{name}:{line}: TOML syntax error: {message[: at.start() if at else None]}{where}"
        ) from e
    return data, _toml_lines(text), []


def _read_yaml(text: str, name: str) -> Read:
    """SafeLoader only: a pipelines file may come from anyone, and must not build objects.
    Lines come from the node tree: a mapping value's is its key's. A repeated key is a
    mistake here: PyYAML would silently keep the last one and drop what came before."""
    lines: dict[Loc, int] = {}
    problems: list[tuple[int, str]] = []
    seen: set[int] = set()  # an alias already walked (an anchor can even contain itself)

    def walk(node: Any, loc: Loc, line: int) -> None:
        lines[loc] = line
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child, key_line = (*loc, str(key.value)), key.start_mark.line + 1
                if child in lines:
                    problems.append((key_line, f"{_render(child)}: duplicate key (given twice)"))
                walk(value, child, key_line)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*loc, i), item.start_mark.line + 1)

    loader: Any = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:  # an empty file
            return {}, lines, problems
        walk(node, (), node.start_mark.line + 1)  # before construction rewrites `<<: *base`
        return loader.construct_document(node), lines, problems
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = f"{e.context}: {e.problem}" if e.context else e.problem
        kind = "error" if isinstance(e, yaml.constructor.ConstructorError) else "syntax error"
        line = mark.line + 1 if mark else 1
        raise PipelineFileError(f"{name}:{line}: YAML {kind}: {what}") from e
    except yaml.YAMLError as e:  # a reader error: a character YAML does not allow
        line = text.count("\n", 0, getattr(e, "position", 0)) + 1
        raise PipelineFileError(f"{name}:{line}: not YAML text: {str(e).splitlines()[0]}") from e
    finally:
        if loader is not None:
            loader.dispose()


def _toml_lines(text: str) -> dict[Loc, int]:
    """Where each table and key of a TOML text starts, keyed by the location pydantic would
    name (`("pipelines", 0, "sinks", 1)` for the second `[[pipelines.sinks]]` of the first
    pipeline). A best effort: lines inside a multi-line string or array are skipped, and the
    keys inside an inline table share the line of the key that holds it."""
    lines: dict[Loc, int] = {}
    arrays: dict[Loc, int] = {}  # an array of tables -> index of its last table
    table: Loc = ()
    depth, closing = 0, ""  # an open array or inline table; an open multi-line string
    for number, line in enumerate(text.splitlines(), start=1):
        rest = line
        if closing:
            end = line.find(closing)
            if end < 0:
                continue
            rest, closing = line[end + 3 :], ""
        elif depth == 0 and (header := _HEADER.match(line)):
            *parents, last = _split(header[2])
            table = ()
            for key in parents:  # an array of tables stands for its last table (TOML's rule)
                table = (*table, key)
                table = (*table, arrays[table]) if table in arrays else table
            table = (*table, last)
            if header[1] == "[[":
                lines.setdefault(table, number)
                arrays[table] = arrays.get(table, -1) + 1
                table = (*table, arrays[table])
            lines.setdefault(table, number)
            continue
        elif depth == 0 and (pair := _KEY_LINE.match(line)):
            keys = _split(pair[1])
            for i in range(1, len(keys) + 1):
                lines.setdefault((*table, *keys[:i]), number)
            rest = pair[2]
        change, closing = _scan(rest)
        depth = max(depth + change, 0)
    return lines


def _split(dotted: str) -> list[str]:
    return [k[1:-1] if k[0] in "\"'" else k for k in re.findall(_KEY, dotted)]


def _scan(value: str) -> tuple[int, str]:
    """Brackets opened minus closed in a line's value, outside strings and comments; and the
    delimiter of a multi-line string left open at its end ("" if none)."""
    depth = 0
    for token in _TOKEN.findall(value):
        if token in _ML:
            return depth, token
        depth += (token in "[{") - (token in "]}")  # a string or a comment is neither
    return depth, ""


def _render(loc: Loc) -> str:
    """`pipelines[0].sinks[1].kind`: the location as a user would write it."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out


def _problem(error: ErrorDetails, data: Any, lines: dict[Loc, int]) -> tuple[int, str]:
    """One pydantic error as (line, `path: message`)."""
    loc = _without_tags(tuple(error["loc"]), data)
    ctx = error.get("ctx") or {}
    message = error["msg"]
    if error["type"] == "union_tag_invalid":
        loc, message = (*loc, "kind"), f"{ctx['tag']!r} is not one of {ctx['expected_tags']}"
    elif error["type"] == "union_tag_not_found":
        field = next((p for p in reversed(loc) if isinstance(p, str)), "")
        kinds = f": one of {_KINDS[field]}" if field in _KINDS else ""
        loc, message = (*loc, "kind"), f"Field required{kinds}"
    elif error["type"] == "value_error":
        message = str(ctx.get("error", message))
    elif error["type"] == "model_type" and not loc:
        message = "the top level must be a mapping with a `pipelines` list"
    elif error["type"] == "extra_forbidden":
        message = "unknown key (not a field here: a typo, or in the wrong table?)"
    if not loc and error["type"] == "value_error" and isinstance(data, dict):
        loc = _repeated_name(data.get("pipelines"))
    line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), 1)
    return line, f"{_render(loc)}: {message}" if loc else message


def _without_tags(loc: Loc, data: Any) -> Loc:
    """Pydantic puts a discriminated union's tag into the location
    (`pipelines.0.source.rabbitmq.queue`); the file has no such key, so it is dropped."""
    out: list[str | int] = []
    node, tag_dropped = data, False
    for part in loc:
        if isinstance(node, dict) and not tag_dropped and node.get("kind") == part:
            tag_dropped = True
            continue
        out.append(part)
        tag_dropped = False
        if isinstance(node, dict):
            node = node.get(part)
        else:
            in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            node = node[part] if in_list else None
    return tuple(out)


def _repeated_name(pipelines: Any) -> Loc:
    """The name that repeats an earlier pipeline's: the file-wide check has no location."""
    names: set[Any] = set()
    for i, pipeline in enumerate(pipelines if isinstance(pipelines, list) else []):
        name = pipeline.get("name") if isinstance(pipeline, dict) else None
        if name in names:
            return ("pipelines", i, "name")
        names.add(name)
    return ()
