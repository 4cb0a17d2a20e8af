"""The `generate` task's parameters: a prompt template over the item's fields and the
decoding, checked at submit so that a job never starts with a template or schema that
cannot work."""

import secrets
import string
from typing import Annotated, Any, ClassVar

from pydantic import Field, StringConstraints, field_validator, model_validator

from schemas.jobs import Item
from schemas.task_spec import InputSeen, TaskParams
from schemas.text_patterns import TEMPLATE

DEFAULT_PROMPT = "{text}"
# A list whose values may hold commas or blanks (a stop string "\n"): the command line takes
# it as a repeated option, a form as repeated parts, each as it is.
REPEATABLE: dict[str, Any] = {"repeatable": True}
DEFAULT_MAX_NEW_TOKENS = 128  # without max_new_tokens (within the model's positions)
MAX_NEW_TOKENS = 4096  # the most any job may ask; a model's positions may cap it lower
MAX_STOP_STRINGS = 8
MAX_TEMPLATE_CHARS = 20_000
# The last of an explanation's `target_tokens` when the output ended by the model's own end
# token (not a stop string or the token cap): no piece of the output text.
END_OF_OUTPUT = "<end>"


def template_fields(template: str) -> list[str]:
    """The field names a prompt template reads, in order, each once: `{text}` reads the
    item's text, `{title}` its `title` field. Raises ValueError for what str.format would
    do more with (positions, attributes, indexes, conversions, format specs) or cannot
    parse (an unmatched brace: write `{{` for a literal one)."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"the prompt template does not parse: {exc}; "
                         "write {{ and }} for literal braces") from None  # fmt: skip
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(
                f"the prompt template's field {{{name}}} is not a plain field name "
                "(letters, digits, _): name a column, such as {text}"
            )
        if spec or conversion:
            raise ValueError(
                f"the prompt template's field {{{name}}} takes no format or conversion"
            )
        if name not in names:
            names.append(name)
    return names


MIN_TEMPERATURE = (
    0.01  # below: greedy (the limit as the temperature falls; logits / 1e-300 overflow)
)


def sampling(temperature: float | None, top_p: float | None) -> tuple[float, float] | None:
    """(temperature, top_p) to sample with, or None for greedy decoding. A temperature of
    MIN_TEMPERATURE or more samples; top_p alone samples at temperature 1 (as the OpenAI API
    does); a temperature below it is greedy whatever top_p says."""
    if temperature is not None and temperature < MIN_TEMPERATURE:
        return None
    if temperature is None and top_p is None:
        return None
    return (1.0 if temperature is None else temperature), (1.0 if top_p is None else top_p)


def references(schema: Any) -> list[str]:
    """Every `$ref` string in a schema, at any depth."""
    if isinstance(schema, dict):
        own = [schema["$ref"]] if isinstance(schema.get("$ref"), str) else []
        return own + [r for v in schema.values() for r in references(v)]
    if isinstance(schema, list):
        return [r for v in schema for r in references(v)]
    return []


def pointed(schema: Any, ref: str) -> Any:
    """What a local reference (#, #/a/b, with ~0 and ~1 escapes) names, or None."""
    node = schema
    for part in [p for p in ref.removeprefix("#").split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def render_prompt(template: str, fields: dict[str, Any]) -> str:
    """The template with each field's value; a field missing from `fields` raises KeyError."""
    return template.format_map({name: fields[name] for name in template_fields(template)})


class GenerateParams(TaskParams):
    prompt: str = Field(
        DEFAULT_PROMPT,
        description="the prompt template over the item's fields, such as "
        "'Summarise: {text}' ({text} is the text column; {name} any other column; "
        "{{ }} literal braces)",
        json_schema_extra={"file_option": True},
    )
    max_new_tokens: int | None = Field(
        None, ge=1, le=MAX_NEW_TOKENS, description="the most tokens generated per row "
        f"(default {DEFAULT_MAX_NEW_TOKENS}; capped at what the model's positions leave after "
        "the prompt, said on the row)",
    )  # fmt: skip
    temperature: float | None = Field(
        None,
        ge=0,
        le=5,
        description="sampling temperature; 0, or unset without top_p: greedy (deterministic)",
    )
    top_p: float | None = Field(
        None, gt=0, le=1, description="nucleus sampling mass; alone, samples at temperature 1"
    )
    seed: int | None = Field(
        None, ge=0, lt=2**31, description="the job's sampling seed (each row's is derived "
        "from it and the row's key); drawn and recorded when sampling without one; "
        "greedy decoding needs none",
    )  # fmt: skip
    stop: list[str] | None = Field(
        None,
        description="stop strings: generation ends at the first, which is left out",
        json_schema_extra=REPEATABLE,
    )
    json_schema: dict[str, Any] | None = Field(
        None, description="a JSON Schema the output must parse and validate against "
        "(a JSON file on the command line); a row that does not ends `invalid`",
    )  # fmt: skip

    @field_validator("prompt")
    @classmethod
    def _template(cls, value: str) -> str:
        if len(value) > MAX_TEMPLATE_CHARS:
            raise ValueError(f"the prompt template is over {MAX_TEMPLATE_CHARS} characters")
        if "\x00" in value:
            raise ValueError("the prompt template holds a NUL character")
        template_fields(value)
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: list[str] | None) -> list[str] | None:
        if not value:  # none given
            return None
        if any(not s for s in value):
            raise ValueError("stop strings must not be empty")
        if len(value) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(value)}")
        return value

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        import jsonschema  # only where a schema is given: producers start fast

        try:
            jsonschema.validators.validator_for(value).check_schema(value)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
            raise ValueError(f"json_schema is not a valid JSON Schema at {where}: "
                             f"{exc.message}") from None  # fmt: skip
        for ref in references(value):
            if not ref.startswith("#") or pointed(value, ref) is None:
                raise ValueError(
                    f"json_schema's $ref {ref!r} points at nothing in the schema "
                    "(only references within it, such as #/$defs/name, are followed)"
                )
        return value

    @model_validator(mode="after")
    def _seed(self) -> "GenerateParams":
        if self.samples and self.seed is None:  # recorded on the job: a retried chunk repeats
            object.__setattr__(self, "seed", secrets.randbelow(2**31))
        return self

    reads_item_fields: ClassVar[bool] = True

    @classmethod
    def row_fields(cls, given: dict[str, Any]) -> list[str]:
        try:
            names = template_fields(str(given.get("prompt") or DEFAULT_PROMPT))
        except ValueError:  # the parameters' own check says why, at submit
            return []
        return [name for name in names if name != "text"]

    @classmethod
    def check_input(cls, params: dict[str, Any], seen: InputSeen) -> None:
        """A field no usable item has is a mistake in the template or the input: the submit
        is refused, naming the fields there are."""
        wanted = [f for f in template_fields(params.get("prompt", DEFAULT_PROMPT)) if f != "text"]
        if absent := [f for f in wanted if f not in seen.fields] if seen.usable else []:
            has = ", ".join(["text", *sorted(seen.fields)])
            raise ValueError(
                f"the prompt template reads {', '.join('{' + f + '}' for f in absent)}, "
                f"which the input does not have (its fields: {has})"
            )

    @classmethod
    def prepare_batch(cls, params: dict[str, Any], items: list[Item]) -> list[Item]:
        """Each item keeps only the fields its template reads. An item without a field the
        others have ends `invalid`."""
        wanted = [f for f in template_fields(params.get("prompt", DEFAULT_PROMPT)) if f != "text"]
        out = []
        for it in items:
            fields = it.fields or {}
            if it.invalid:
                out.append(it.model_copy(update={"fields": None}))
            elif missing := [f for f in wanted if f not in fields]:
                out.append(Item(key=it.key, invalid=f"no value for the prompt's "
                                f"{', '.join('{' + f + '}' for f in missing)}"))  # fmt: skip
            else:
                kept = {f: fields[f] for f in wanted}
                out.append(it.model_copy(update={"fields": kept or None}))
        return out

    @classmethod
    def api_fields(cls, settings: Any) -> dict[str, tuple[Any, Any]]:
        """The template's syntax and the stop strings' limits, in the published schema."""
        prompt = cls.model_fields["prompt"]
        stop = Annotated[str, StringConstraints(min_length=1, pattern="^[^\\x00]*$")]
        return {
            "prompt": (
                Annotated[str, StringConstraints(max_length=MAX_TEMPLATE_CHARS, pattern=TEMPLATE)],
                Field(DEFAULT_PROMPT, description=prompt.description),
            ),
            "stop": (
                Annotated[list[stop], Field(max_length=MAX_STOP_STRINGS)] | None,  # type: ignore[valid-type]
                Field(
                    None,
                    description=cls.model_fields["stop"].description,
                    json_schema_extra=REPEATABLE,
                ),
            ),
        }

    @property
    def samples(self) -> bool:
        return sampling(self.temperature, self.top_p) is not None
